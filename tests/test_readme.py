"""The README is a front door: short, no project history, every link resolves, its commands are CI's.

Guides live in ``docs/*.md`` and the history in ``CHANGELOG.md``; these tests keep the README to
what a user needs first and check that every relative link and image in the README, the changelog
and the guides points to a file in the repository (and, for a ``#anchor`` into a Markdown file, to
one of its headings), and that the README's two commands are the ones ``.ci/run`` runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 350
DOCS = [README, REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks, HTML comments and inline code (links there are not links)."""
    return INLINE_CODE.sub("", COMMENT.sub("", FENCE.sub("", text)))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (inline code marks too), spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_the_readme_is_short_and_has_no_step_history():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move guides to docs/"
    # HTML comments are not shown (the figures still to be re-run are marked with one)
    steps = re.findall(r".{0,40}\bSteps?[ -]?\d+.{0,20}", COMMENT.sub("", text))
    assert not steps, f"README.md tells history ({steps[:3]}); it goes in CHANGELOG.md"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_image_resolves(path):
    assert path.is_file()
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists() or REPO not in (resolved, *resolved.parents):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading '#{anchor}' in {resolved.relative_to(REPO)}")
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_links_every_guide():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in _links(README)}
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{missing}"


def _steps(command: str) -> list[list[str]]:
    """A shell command line as its ``&&`` steps, each as words, normalised: no ``-q``, a leading
    ``(`` or ``!`` dropped, and an ``--out`` folder as its last path component."""
    out = []
    for step in command.split("&&"):
        step = step.strip().lstrip("(!").strip().rstrip(")").strip()
        if not step:
            continue
        words = [w for w in shlex.split(step) if w != "-q"]
        for i, word in enumerate(words[:-1]):
            if word == "--out":
                words[i + 1] = words[i + 1].rstrip("/").rsplit("/", 1)[-1]
        out.append(words)
    return out


def _readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Two commands\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Two commands' section"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_readme_commands_are_the_ones_ci_runs():
    commands = _readme_commands()
    assert len(commands) == 2, f"README.md's 'Two commands' should hold two commands, found {commands}"
    install, tests = commands
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in ci.replace("\\\n", " ").splitlines() if not line.strip().startswith("#")]
    # command 2 (the full install and the test suite) runs verbatim
    assert tests in ci_lines, f".ci/run does not run README command 2 verbatim: {tests}"
    # command 1 runs in a venv of its own: each of its steps is a step of .ci/run (quiet, another --out folder)
    ci_steps = [step for line in ci_lines for step in _steps(line)]
    for step in _steps(install):
        assert step in ci_steps, f".ci/run does not run README command 1's step {shlex.join(step)!r}"
    assert install.startswith("pip install -e . &&") and "pytest" in tests

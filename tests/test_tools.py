"""Every tool runs one way, ``python -m tools.<script>`` from the repository root, and says so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_helps

ROOT = Path(__file__).resolve().parents[1]
#: the scripts: every module of tools/ but the package's own
SCRIPTS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """``python -m tools.<script> --help`` of every script."""
    return run_helps("tools", SCRIPTS)


def test_tools_is_a_package():
    assert (ROOT / "tools" / "__init__.py").is_file() and len(SCRIPTS) >= 5


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_tool_runs_as_a_module(helps, name):
    """``--help`` parses and exits 0 without running anything (no sys.path edits), and the script's
    docstring gives the command it is run with."""
    result = helps[name]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: "), result.stdout[:200]
    source = (ROOT / "tools" / f"{name}.py").read_text()
    assert f"python -m tools.{name}" in source
    assert "python tools/" not in source and "tools/" + name not in source and "sys.path" not in source


def test_docs_and_configs_give_the_module_command():
    """A command quoted in the README, docs/, configs/ or a model card runs a tool as a module: a
    ``python tools/<script>.py`` there fails (the tools import the package as ``tools.``)."""
    quoted = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
              *(ROOT / "facemark" / "assets" / "models").glob("*.md")]
    stale = [f"{p.relative_to(ROOT)}:{n}" for p in quoted for n, line in enumerate(p.read_text().splitlines(), 1)
             if "python tools/" in line or "python3 tools/" in line]
    assert len(quoted) > 10 and not stale, stale


def test_ruff_is_configured_installed_and_run_by_ci_before_the_tests():
    import shutil
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lint = project["tool"]["ruff"]["lint"]
    assert {"E", "F", "W", "I", "B", "UP"} <= set(lint["select"]) and project["tool"]["ruff"]["line-length"] == 120
    assert "ruff" in project["project"]["optional-dependencies"]["dev"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ruff check ." in ci and ci.index("ruff check .") < ci.index("pytest")
    if shutil.which("ruff"):  # the tools themselves are clean
        result = subprocess.run(["ruff", "check", "tools", "tests/test_tools.py"], cwd=ROOT, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout[-2000:]

"""The custom-scheme example of docs/data.md runs as written on a fresh clone (with 2 training steps)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED

from facemark.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data.md"
SCHEME = ROOT / "examples" / "scheme_demo" / "brows_eyes_mouth.yaml"


def _section() -> str:
    text = DOC.read_text()
    return text[text.index("## Point schemes"):]


def test_the_docs_quote_the_shipped_scheme_file():
    quoted = re.search(r"```yaml\n(.*?)```", _section(), re.S).group(1)
    shipped = "".join(line + "\n" for line in SCHEME.read_text().splitlines() if not line.startswith("#"))
    assert quoted == shipped


@pytest.mark.skipif(not (SHARED / "data" / "300w-lite").is_dir(), reason="no shared 300w-lite data")
def test_the_three_commands_run_as_written(tmp_path, monkeypatch):
    section = _section()
    make_raw = re.search(r"`(python examples/scheme_demo/make_raw\.py [^`]*)`", section).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    assert [c.split()[:2] for c in commands] == [["facemark", "data"], ["facemark", "train"], ["facemark", "predict"]]
    for name in ("examples", "configs"):  # a clone's folders, in a scratch working folder
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "FACEMARK_SHARED": str(SHARED), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, *shlex.split(make_raw)[1:]], check=True, env=env, capture_output=True)
    assert len(list((tmp_path / "data" / "scheme_demo" / "raw").glob("*.pts"))) == 100
    for command in commands:
        argv = shlex.split(command)[1:] + (["--set", "steps=2"] if command.startswith("facemark train") else [])
        assert main(argv) == 0, command
    assert (tmp_path / "runs" / "scheme_demo" / "predict" / "predictions.json").is_file()

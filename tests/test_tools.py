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


def test_int8_weights_7bit_halves_8_bit_weights_and_refuses_7_bit_ones(tmp_path):
    """An 8-bit copy of the shipped 7-bit default (weights and biases doubled, scales halved: the same
    model) comes back as the shipped file, bit for bit in every initializer (biases included: their
    scale must stay the input's times the weight's, or ONNX Runtime leaves the Convs unfused); a 7-bit
    file and --out naming the input are refused."""
    import json

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from facemark.spec import MODEL_DIR
    from tools.int8_weights_7bit import main

    shipped = onnx.load(str(Path(MODEL_DIR) / "default.onnx"))
    doubled = onnx.load(str(Path(MODEL_DIR) / "default.onnx"))
    inits = {i.name: i for i in doubled.graph.initializer}
    for node in doubled.graph.node:  # int8 weights and their Convs' int32 biases
        kind = inits[node.input[0]].data_type if node.op_type == "DequantizeLinear" and node.input[0] in inits else None
        if kind in (onnx.TensorProto.INT8, onnx.TensorProto.INT32):
            w, s = (numpy_helper.to_array(inits[n]) for n in node.input[:2])
            w = (w.astype(np.int16) * 2).clip(-127, 127).astype(np.int8) if kind == onnx.TensorProto.INT8 else w * 2
            inits[node.input[0]].CopyFrom(numpy_helper.from_array(w, node.input[0]))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(s / 2, node.input[1]))
    eight = tmp_path / "eight.onnx"
    onnx.save(doubled, str(eight))
    assert main([str(eight), "--out", str(tmp_path / "seven.onnx")]) == 0
    back = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "seven.onnx")).graph.initializer}
    for init in shipped.graph.initializer:
        assert np.array_equal(back[init.name], numpy_helper.to_array(init)), init.name
    meta = json.loads(onnx.load(str(tmp_path / "seven.onnx")).metadata_props[0].value)
    assert meta["int8_weight_bits"] == 7
    assert main([str(Path(MODEL_DIR) / "default.onnx"), "--out", str(tmp_path / "again.onnx")]) == 1
    assert not (tmp_path / "again.onnx").exists()
    with pytest.raises(SystemExit):
        main([str(eight), "--out", str(eight)])

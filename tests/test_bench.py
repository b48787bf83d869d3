"""Every bench script runs one way, ``python -m bench.<script>`` from the repository root, and says so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_helps

ROOT = Path(__file__).resolve().parents[1]
#: the scripts: every module of bench/ but the package's own and the shared timing helpers
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in ("__init__", "timing"))


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """``python -m bench.<script> --help`` of every script."""
    return run_helps("bench", SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_bench_script_runs_as_a_module(helps, name):
    """``--help`` parses and exits 0 without running anything (no sibling imports, no sys.path edits),
    and the script's docstring gives the command it is run with."""
    result = helps[name]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: "), result.stdout[:200]  # argparse's help, not a benchmark's output
    source = (ROOT / "bench" / f"{name}.py").read_text()
    assert f"python -m bench.{name}" in source
    assert "python bench/" not in source and "sys.path" not in source


def test_every_bench_script_is_listed_in_docs_speed():
    """docs/speed.md's table of benchmarks names every script (what it measures, where its figures go)."""
    table = (ROOT / "docs" / "speed.md").read_text().split("## The benchmarks", 1)[1]
    missing = [name for name in SCRIPTS if f"`bench.{name}`" not in table and f"`bench.{name}`," not in table]
    assert not missing, missing


def test_pipelines_take_turns_in_a_shuffled_order():
    """``bench.timing.taking_turns``: every photo runs every pipeline once, in a seeded order in which
    each pipeline follows each other about equally often (a rotated fixed order kept one predecessor)."""
    from collections import Counter

    from bench.timing import taking_turns

    labels = ["default", "flip on", "fast", "dlib"]
    orders = taking_turns(labels, 2000)
    assert orders == taking_turns(labels, 2000) and all(sorted(o) == sorted(labels) for o in orders)
    after_dlib = Counter(o[i + 1] for o in orders for i in range(len(o) - 1) if o[i] == "dlib")
    assert set(after_dlib) == {"default", "flip on", "fast"}
    assert max(after_dlib.values()) < 1.2 * min(after_dlib.values())


def test_machine_names_the_cpu_its_instruction_sets_and_cores(monkeypatch, tmp_path):
    import os
    import platform

    import bench

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu\n")
    real_path = bench.Path
    monkeypatch.setattr(bench, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert bench.machine() == f"Some CPU 9000 ({platform.machine()}: AVX2, AVX-512, AVX-512 VNNI), {os.cpu_count()} cores"
    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu sse\n")
    assert bench.machine() == f"Old CPU ({platform.machine()}), {os.cpu_count()} cores"

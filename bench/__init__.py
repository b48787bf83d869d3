"""Benchmarks that print tables (results in bench/results/) and the scripts that fit shipped constants.

Run from the repository root, as modules: ``python -m bench.<script>`` (e.g. ``python -m
bench.bench_end_to_end``). The fitting functions live in the package (:mod:`facemark.calibrate`);
these scripts call them and write the tables. Nothing edits ``sys.path``.
"""

import os
import platform
from collections.abc import Sequence
from pathlib import Path

from facemark.files import write_atomic

#: the shared data folder (``$FACEMARK_SHARED``, else ``../shared`` beside the repository)
SHARED = Path(os.environ.get("FACEMARK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: the raw 300w-lite folder the benches split themselves
DEFAULT_ROOT = SHARED / "data" / "300w-lite"


#: the instruction sets a report names: ONNX Runtime's INT8 and float kernels pick their code by them,
#: so the same model's time differs between CPUs that have them and CPUs that do not
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "amx_int8": "AMX-INT8"}


def machine() -> str:
    """The CPU a report's timings came from: model name, which of :data:`ISA_FLAGS` it has and the
    core count, e.g. ``"AMD EPYC (x86_64: AVX2), 2 cores"``."""
    model, flags = "", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else ():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    isa = ", ".join(name for flag, name in ISA_FLAGS.items() if flag in flags)
    return f"{model or platform.processor() or 'CPU'} ({platform.machine()}{': ' + isa if isa else ''}), {os.cpu_count()} cores"


def write_report(path: str | os.PathLike, report: str | Sequence[str]) -> Path:
    """The one tail of the bench scripts: write the markdown ``report`` to ``path`` atomically (its
    folder made if need be) and print it. ``report``: the text as it is, or its lines, joined by
    newlines (the file then ends with one newline). Returns the path written."""
    text = report if isinstance(report, str) else "\n".join(report).rstrip("\n") + "\n"
    out = write_atomic(path, text)
    print(text)
    return out

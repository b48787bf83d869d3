"""Benchmarks that print tables (results in bench/results/) and the scripts that fit shipped constants.

Run from the repository root, as modules: ``python -m bench.<script>`` (e.g. ``python -m
bench.bench_end_to_end``). The fitting functions live in the package (:mod:`facemark.calibrate`);
these scripts call them and write the tables. Nothing edits ``sys.path``.
"""

import os
from pathlib import Path

#: the shared data folder (``$FACEMARK_SHARED``, else ``../shared`` beside the repository)
SHARED = Path(os.environ.get("FACEMARK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: the raw 300w-lite folder the benches split themselves
DEFAULT_ROOT = SHARED / "data" / "300w-lite"

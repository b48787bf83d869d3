"""Benchmarks that print tables (results in bench/results/) and the scripts that fit shipped constants.

Run from the repository root, as modules: ``python -m bench.<script>`` (e.g. ``python -m
bench.bench_end_to_end``). The fitting functions live in the package (:mod:`facemark.calibrate`);
these scripts call them and write the tables. Nothing edits ``sys.path``.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from facemark.files import write_atomic

#: the shared data folder (``$FACEMARK_SHARED``, else ``../shared`` beside the repository)
SHARED = Path(os.environ.get("FACEMARK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: the raw 300w-lite folder the benches split themselves
DEFAULT_ROOT = SHARED / "data" / "300w-lite"


def write_report(path: str | os.PathLike, report: str | Sequence[str]) -> Path:
    """The one tail of the bench scripts: write the markdown ``report`` to ``path`` atomically (its
    folder made if need be) and print it. ``report``: the text as it is, or its lines, joined by
    newlines (the file then ends with one newline). Returns the path written."""
    text = report if isinstance(report, str) else "\n".join(report).rstrip("\n") + "\n"
    out = write_atomic(path, text)
    print(text)
    return out

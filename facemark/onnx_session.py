"""One way to open an ONNX file on ONNX Runtime's CPU provider, for every network facemark runs
(the landmark models and the detectors).

A photo runs two small networks one after the other (BlazeFace, then the landmark crops), each a
chain of short operators. How the intra-op pool's threads wait decides much of their time:

* **sleeping** between operators (``session.intra_op.allow_spinning=0``) costs a wake-up per
  operator: BlazeFace's ~80 operators took 1.7 ms a photo, the landmark model's crop and mirror
  about 0.5 ms more than with spinning threads;
* **spinning** between runs (ONNX Runtime's default) keeps a session's idle threads on the cores
  while the *other* session runs: the two pools fought for the 2 cores and a photo got slower;
* so the threads spin while a run lasts and stop when it ends (``session.force_spinning_stop=1``).

``python -m bench.bench_profile`` times each session's runs (``bench/results/profile.md``).
"""

from __future__ import annotations

import numbers
from pathlib import Path

import onnxruntime as ort

__all__ = ["SESSION_CONFIG", "check_threads", "cpu_session"]

#: the session config entries every facemark session gets (see the module's docstring)
SESSION_CONFIG = {
    "session.intra_op.allow_spinning": "1",
    "session.force_spinning_stop": "1",
}


def check_threads(value, name: str = "num_threads") -> int | None:
    """``value`` as a thread count (a whole number from 1) or None, else a ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number from 1, or None for one per core; got {value!r}")
    return int(value)


def cpu_session(path: str | Path, num_threads: int | None = None) -> ort.InferenceSession:
    """``path`` on the CPU provider: ``num_threads`` intra-op threads (None: one per core) and one
    inter-op thread, with :data:`SESSION_CONFIG`. Errors are ONNX Runtime's own (the callers
    name the file), but for a bad ``num_threads`` (:func:`check_threads`)."""
    options = ort.SessionOptions()
    num_threads = check_threads(num_threads)
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

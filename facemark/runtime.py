"""Loading a model: a shipped name or a file -> its spec and a runner.

The floor under :class:`facemark.Landmarker`: everything that turns ``"default"``, ``x.onnx``,
``x.pt``, ``x.dat`` or ``x.lbf.npz`` into something that maps crops to points::

    from facemark.runtime import open_model
    model = open_model("default")                  # the shipped model, on ONNX Runtime
    points = model.runner(crops)                   # uint8 BGR (B, S, S, 3) -> (B, K, 2) in 0..1 of the crop
    points, features = model.runner.run_with_features(crops)   # + raw point features (B, K, 2) or None
    model.spec                                     # facemark.spec.ModelSpec (None for classical models)
    model_digest("default")                        # the model's one identity: its file's full sha256

An ``.onnx`` file runs on ONNX Runtime (its spec read from its metadata and checked against its
graph), a ``.pt`` checkpoint on torch (``pip install "facemark[train]"``; nothing is exported on
the fly: ``facemark export`` makes the ``.onnx``), a classical model (:mod:`facemark.classical`:
dlib ERT ``.dat``, LBF ``.lbf.npz``) on its own runner. The shipped names are
:data:`facemark.spec.SHIPPED_MODELS`.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facemark.classical import SUFFIXES as CLASSICAL_SUFFIXES
from facemark.classical import load_classical
from facemark.geometry import crops_to_input
from facemark.onnx_session import check_threads, cpu_session
from facemark.spec import MODEL_SUFFIXES, ModelSpec, read_onnx_metadata, resolve_model

__all__ = ["BACKENDS", "MODEL_SUFFIXES", "Model", "OnnxRunner", "Runner", "TorchRunner", "model_digest", "open_model",
           "resolve_model"]

BACKENDS = ("onnx", "torch")
TORCH_EXTRA = 'pip install "facemark[train]"'


class Runner(Protocol):
    """Crops to points: uint8 BGR ``(B, S, S, 3)`` -> ``(B, K, 2)`` in 0..1 of the crop."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class OnnxRunner:
    """An exported model on ONNX Runtime (the CPU provider). ``num_threads``: intra-op threads
    (None: ONNX Runtime's default, one per core)."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        try:
            self.session = cpu_session(path, num_threads)
        except Exception as err:  # noqa: BLE001 - protobuf and onnxruntime fail in their own ways on foreign bytes
            raise ValueError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
        self._features = "point_features" in {o.name for o in self.session.get_outputs()}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # numpy, not torch, for the input: torch's thread pool would fight onnxruntime's
        return self.session.run(["points"], {"image": crops_to_input(batch)})[0]

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Points and the ``point_features`` output (None for files exported without it)."""
        if not self._features:
            return self(batch), None
        points, features = self.session.run(["points", "point_features"], {"image": crops_to_input(batch)})
        return points, features


class TorchRunner:
    """A checkpoint's model on torch (``device``: ``"cpu"``, ``"cuda"``, ...)."""

    def __init__(self, model, device: str = "cpu"):
        import torch  # the train extra

        self.torch, self.device = torch, torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            inputs = self.torch.from_numpy(crops_to_input(batch)).to(self.device)
            return self.model.predict_points(inputs).float().cpu().numpy()

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Points ``(B, K, 2)`` and the raw point features ``(B, K, 2)`` (None for models without them)."""
        if not hasattr(self.model, "predict_with_features"):
            return self(batch), None
        with self.torch.inference_mode():
            inputs = self.torch.from_numpy(crops_to_input(batch)).to(self.device)
            points, features = self.model.predict_with_features(inputs)
            return points.float().cpu().numpy(), features.float().cpu().numpy()


class _ClassicalRunner:
    """A classical model's runner with the two-method interface (no point features)."""

    def __init__(self, run):
        self._run = run

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        return self._run(batch), None


@dataclass
class Model:
    """A loaded model: where it came from, how it runs, and what it is."""

    path: Path
    backend: str  # "onnx", "torch" or "classical"
    spec: ModelSpec | None  # None for classical models
    meta: dict  # the spec's fields and the file's provenance (training step, best NME, version)
    runner: Runner

    @property
    def name(self) -> str:
        return f"{self.meta['model_name']}@{self.path.stem}"


def model_digest(model: str | Path) -> str:
    """The one identity of a model, for every output that records which model made it (the HTTP
    service, bulk rows): the full sha256 (64 hex digits) of its file; ``model`` is a shipped name or a
    path (:func:`resolve_model`). Hashed once per file version (path, size, modification time)."""
    path = resolve_model(model).resolve()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_model(model: str | Path = "default", backend: str | None = None, device: str = "cpu",
               num_threads: int | None = None) -> Model:
    """Load ``model`` (a shipped name or a file, :func:`resolve_model`) with its runner.

    ``backend``: ``"onnx"`` or ``"torch"``; by default the file's own (an ``.onnx`` on ONNX Runtime,
    a ``.pt`` on torch; a shipped name on ONNX Runtime); classical models ignore it.
    ``num_threads``: ONNX Runtime's intra-op threads or torch's threads (None: their default).
    """
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
    num_threads = check_threads(num_threads)
    path = resolve_model(model, backend)
    if path.suffix in CLASSICAL_SUFFIXES:
        run, meta = load_classical(path, num_threads)
        return Model(path, "classical", None, meta, _ClassicalRunner(run))
    if path.suffix == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path}: an ONNX model runs only with backend='onnx'")
        runner = OnnxRunner(path, num_threads)
        raw = read_onnx_metadata(path, runner.session)  # checked against the graph
        if raw.get("precision") == "int8" and raw.get("int8_weight_bits") != 7:
            warnings.warn(f"{path}: INT8 with 8-bit weights (exported before facemark quantized in 7 bits): "
                          "on CPUs without VNNI (AVX2 alone) its sums saturate and its points move (the "
                          "default lost 0.18 points of NME so); re-export it with `facemark export ... --int8`",
                          stacklevel=3)
        spec = ModelSpec.from_dict(raw, source=path)  # files exported before scheme and std: filled in
        return Model(path, "onnx", spec, {**raw, **spec.to_dict()}, runner)
    if backend == "onnx":  # never exported on the fly: that is `facemark export`'s job
        raise ValueError(f"{path}: a .pt checkpoint runs with backend='torch'; for ONNX Runtime export it "
                         f"first (`facemark export {path} --onnx model.onnx`)")
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: a .pt checkpoint runs on PyTorch, which is not installed: {TORCH_EXTRA} "
                          "(or use the .onnx file)") from None
    from facemark.checkpoint import load_checkpoint, model_from_checkpoint, model_metadata, model_spec

    state = load_checkpoint(path)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    return Model(path, "torch", model_spec(state), model_metadata(state), TorchRunner(model_from_checkpoint(state)[0], device))

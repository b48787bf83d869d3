"""The public API: ``Landmarker().detect(image)`` and ``Landmarker().predict(image, box)``.

Everything else (the CLI, video, the HTTP service, evaluation) calls these two methods or their
batched forms, so the crop rule, the model's input and the point convention live in one path::

    import facemark
    lm = facemark.Landmarker()                  # shipped default model, ONNX Runtime on the CPU
    faces = lm.detect("photo.jpg")              # [Face(box, score, points (68, 2)), ...]
    points = lm.predict(image_bgr, (x0, y0, x1, y1))   # tight landmark-style box -> (68, 2)

Points are in original-image pixels, 0-based pixel centres (see :mod:`facemark.geometry`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from facemark.geometry import Box, CropRule, box_from_points, crop_box_from_box, crop_image, crops_to_input, from_crop
from facemark.schemes import get_scheme

DEFAULT_MODEL_DIR = Path(str(files("facemark") / "assets" / "models"))


@dataclass
class Face:
    box: tuple[float, float, float, float]  # the detector's face box (or the given box)
    score: float
    points: np.ndarray  # (K, 2) original-image pixels
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. aligned crop, head pose

    def to_dict(self) -> dict:
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "points": np.asarray(self.points, dtype=np.float64).round(2).tolist(),
        }


def load_image(image) -> np.ndarray:
    """A path, a BGR ``ndarray`` (H, W, 3) / grey (H, W), or a PIL image -> BGR uint8 ndarray."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image file not found")
        decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f"{path}: not a readable image (corrupt or unsupported format)")
        return decoded
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    array = np.asarray(image)
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise ValueError(f"expected an (H, W, 3) BGR image, got an array of shape {array.shape}")
    if array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    return array


class _TorchRunner:
    def __init__(self, model, device: str):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            inputs = self.torch.from_numpy(crops_to_input(batch)).to(self.device)
            return self.model.predict_points(inputs).float().cpu().numpy()


class _OnnxRunner:
    def __init__(self, model_bytes_or_path, num_threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes_or_path, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # numpy, not torch, for the input: torch's thread pool would fight onnxruntime's
        return self.session.run(None, {"image": crops_to_input(batch)})[0]


def _onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class Landmarker:
    """Facial landmarks from images: a model, its crop rule and a face detector.

    ``model``: ``"default"`` (shipped with the package), a checkpoint ``.pt`` or an exported
    ``.onnx``. ``backend``: ``"onnx"`` (default when onnxruntime is installed) or ``"torch"``.
    ``refine``: in :meth:`detect`, predict once from the detector's calibrated box, then re-crop
    from the box of the predicted points and predict again, so the detector's box convention
    does not leak into the result. ``flip_test``: also predict on the mirrored crop and average
    (test-time flip augmentation; twice the model time).
    """

    def __init__(self, model: str | Path = "default", backend: str | None = None, device: str = "cpu",
                 detector: str | None = None, refine: bool = True, flip_test: bool = False,
                 num_threads: int | None = None):
        backend = backend or ("onnx" if _onnx_available() else "torch")
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
        path = self._resolve(model, backend)
        self.backend, self.model_path, self.refine, self.flip_test = backend, path, refine, flip_test
        self._detector_name, self._detector = detector, None
        if path.suffix == ".onnx":
            if backend == "torch":
                raise ValueError(f"{path}: an ONNX model runs only with backend='onnx'")
            self.meta = self._onnx_metadata(path)
            self._run = _OnnxRunner(str(path), num_threads)
        else:
            from facemark.checkpoint import load_checkpoint, model_from_checkpoint
            from facemark.export import model_metadata

            state = load_checkpoint(path)
            self.meta = model_metadata(state)
            model_obj, _ = model_from_checkpoint(state)
            if backend == "onnx":
                self._run = _OnnxRunner(self._export_bytes(path), num_threads)
            else:
                if num_threads:
                    import torch

                    torch.set_num_threads(num_threads)
                self._run = _TorchRunner(model_obj, device)
        self.num_points = int(self.meta["num_points"])
        self.input_size = int(self.meta["input_size"])
        self.crop_rule = CropRule(**self.meta["crop"])
        self.scheme = get_scheme(self.num_points)
        self.name = f"{self.meta['model_name']}@{path.stem}"

    # -- model files
    @staticmethod
    def _resolve(model: str | Path, backend: str) -> Path:
        if str(model) == "default":
            candidates = [DEFAULT_MODEL_DIR / f"default.{ext}" for ext in (("onnx", "pt") if backend == "onnx" else ("pt",))]
            for path in candidates:
                if path.is_file():
                    return path
            raise FileNotFoundError(f"no default model in {DEFAULT_MODEL_DIR} (looked for {[p.name for p in candidates]})")
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file not found (give 'default', a .pt checkpoint or a .onnx file)")
        if path.suffix not in (".pt", ".onnx"):
            raise ValueError(f"{path}: expected a .pt checkpoint or an .onnx model")
        return path

    @staticmethod
    def _onnx_metadata(path: Path) -> dict:
        import onnx

        from facemark.export import METADATA_KEY

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise ValueError(f"{path}: ONNX file has no facemark metadata; export it with `facemark export`")
        return json.loads(props[METADATA_KEY])

    @staticmethod
    def _export_bytes(checkpoint: Path) -> bytes:
        import tempfile

        from facemark.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            return export_onnx(checkpoint, Path(tmp) / "model.onnx").read_bytes()

    @property
    def detector(self):
        if self._detector is None:
            from facemark.detectors import DEFAULT_DETECTOR, get_detector

            self._detector = get_detector(self._detector_name or DEFAULT_DETECTOR)
        return self._detector

    # -- prediction
    def crop_box(self, image_size: tuple[int, int], box: Box) -> Box:
        """The crop box this model uses for a landmark-style ``box`` in an image of ``(w, h)``."""
        return crop_box_from_box(box, image_size, self.crop_rule)

    def predict_batch(self, images: Sequence, boxes: Sequence[Sequence[Box]], batch_size: int = 64) -> list[list[np.ndarray]]:
        """Points for many faces of many images: ``boxes[i]`` are landmark-style boxes in ``images[i]``.

        All crops go through the model together, ``batch_size`` at a time.
        """
        images = [load_image(image) for image in images]
        jobs = []  # (image index, crop box)
        for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            height, width = image.shape[:2]
            jobs += [(i, self.crop_box((width, height), tuple(map(float, box)))) for box in image_boxes]
        results: list[list[np.ndarray]] = [[] for _ in images]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            crops = np.stack([crop_image(images[i], crop_box, self.input_size) for i, crop_box in chunk])
            for (i, crop_box), normalised in zip(chunk, self._normalised_points(crops)):
                results[i].append(from_crop(normalised, crop_box))
        return results

    def _normalised_points(self, crops: np.ndarray) -> np.ndarray:
        """Model output ``(B, K, 2)`` for uint8 BGR crops, averaged with the mirrored crops' if asked."""
        if not self.flip_test:
            return self._run(crops)
        both = self._run(np.concatenate([crops, crops[:, :, ::-1]]))
        return (both[: len(crops)] + self.scheme.flip_normalised(both[len(crops) :])) / 2

    def predict(self, image, box: Box) -> np.ndarray:
        """``(K, 2)`` points for the face in the tight landmark-style ``box = (x0, y0, x1, y1)``."""
        return self.predict_batch([image], [[box]])[0][0]

    def detect_batch(self, images: Sequence, max_faces: int | None = None) -> list[list[Face]]:
        images = [load_image(image) for image in images]
        detections = [self.detector.detect(image)[:max_faces] for image in images]
        boxes = [[self.detector.landmark_box(d.box) for d in found] for found in detections]
        points = self.predict_batch(images, boxes)
        if self.refine:
            boxes = [[box_from_points(p) for p in image_points] for image_points in points]
            points = self.predict_batch(images, boxes)
        return [
            [Face(tuple(float(v) for v in d.box), float(d.score), p) for d, p in zip(found, image_points)]
            for found, image_points in zip(detections, points)
        ]

    def detect(self, image, max_faces: int | None = None) -> list[Face]:
        """Find faces and their points: a list of :class:`Face`, highest detector score first."""
        return self.detect_batch([image], max_faces)[0]

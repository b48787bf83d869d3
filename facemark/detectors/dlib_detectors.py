"""dlib's face detectors: the HOG + linear SVM frontal detector and the CNN (MMOD) detector.

Both need ``pip install facemark[dlib]`` (``dlib-bin`` and ``face-recognition-models``; the
latter ships ``mmod_human_face_detector.dat``, so nothing is downloaded at run time).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from facemark.detectors.base import DEFAULT_MAX_SIDE, Calibration, Detection, Detector, missing_dependency

MMOD_FILE = "mmod_human_face_detector.dat"


def _import_dlib(detector: str):
    try:
        import dlib
    except ImportError:
        raise missing_dependency(detector, "dlib", "dlib") from None
    return dlib


def mmod_model_path() -> Path:
    """``mmod_human_face_detector.dat`` inside the installed ``face_recognition_models`` package.

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``,
    which recent setuptools no longer provide.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise missing_dependency("dlib-cnn", f"the face-recognition-models package ({MMOD_FILE})", "dlib")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MMOD_FILE
    if not path.is_file():
        raise missing_dependency("dlib-cnn", f"{MMOD_FILE}, not found at {path}", "dlib",
                                 "reinstall face-recognition-models")
    return path


def _rect_box(rect) -> tuple[float, float, float, float]:
    # dlib rectangles are inclusive pixel indices: the corners are pixel centres already.
    return float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())


class DlibHogDetector(Detector):
    """dlib's ``get_frontal_face_detector()`` (HOG, five pose-specific linear SVMs).

    ``upsample``: times the image is doubled before detection (finds faces below ~80 px; each doubling
    gives four times the pixels to search). ``threshold``: the SVM score cut (dlib's default 0; negative finds more).
    """

    name = "dlib-hog"
    extra = "dlib"

    def __init__(
        self,
        upsample: int = 0,
        threshold: float = 0.0,
        max_side: int | None = DEFAULT_MAX_SIDE,
        calibration: Calibration | None = None,
    ):
        super().__init__(max_side=max_side, calibration=calibration)
        dlib = _import_dlib(self.name)
        self._detector = dlib.get_frontal_face_detector()
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("dlib") is not None

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        rects, scores, _ = self._detector.run(rgb, self.upsample, self.threshold)
        return [Detection(_rect_box(r), float(s)) for r, s in zip(rects, scores)]


class DlibCnnDetector(Detector):
    """dlib's CNN face detector (max-margin object detection, ``mmod_human_face_detector.dat``).

    ``upsample`` as for :class:`DlibHogDetector` (the network's smallest face is ~40 px);
    ``threshold`` cuts on the MMOD confidence (dlib's default 0).
    """

    name = "dlib-cnn"
    extra = "dlib"

    def __init__(
        self,
        upsample: int = 0,
        threshold: float = 0.0,
        model_path: str | Path | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        calibration: Calibration | None = None,
    ):
        super().__init__(max_side=max_side, calibration=calibration)
        dlib = _import_dlib(self.name)
        self.model_path = Path(model_path) if model_path is not None else mmod_model_path()
        self._detector = dlib.cnn_face_detection_model_v1(str(self.model_path))
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    @staticmethod
    def available() -> bool:
        if importlib.util.find_spec("dlib") is None:
            return False
        try:
            mmod_model_path()
        except ImportError:
            return False
        return True

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        found = self._detector(rgb, self.upsample)
        return [Detection(_rect_box(d.rect), float(d.confidence)) for d in found if d.confidence >= self.threshold]

"""OpenCV's Viola-Jones Haar cascade (the frontal-face cascades shipped in ``cv2.data``).

OpenCV 5 dropped ``cv2.CascadeClassifier`` and the cascade files from ``opencv-python-headless``
(they moved to the contrib modules, without the XML files), so this detector needs an OpenCV 4
build: ``pip install facemark[haar]`` (``opencv-python-headless<5``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facemark.detectors.base import DEFAULT_MAX_SIDE, Calibration, Detection, Detector

CASCADES = {
    "default": "haarcascade_frontalface_default.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
}

_HINT = ("OpenCV 5 removed them from opencv-python-headless; install an OpenCV 4 build with "
         '`pip install facemark[haar]`, i.e. `pip install "opencv-python-headless<5"`')


def cascade_path(cascade: str) -> Path:
    """Path of one of OpenCV's bundled frontal-face cascades (``"default"`` or ``"alt2"``)."""
    if cascade not in CASCADES:
        raise ValueError(f"unknown Haar cascade {cascade!r}; choose one of {sorted(CASCADES)}")
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADES[cascade]
    if not folder or not path.is_file():
        raise ImportError(f"the 'haar' detector needs OpenCV's bundled cascade {CASCADES[cascade]}, "
                          f"not found in this OpenCV {cv2.__version__}: {_HINT}")
    return path


class HaarDetector(Detector):
    """Haar cascade on the histogram-equalised gray image.

    ``cascade``: ``"default"`` or ``"alt2"``; ``scale_factor``, ``min_neighbors`` and
    ``min_size`` (pixels of the downscaled image) go to ``detectMultiScale``. The score is the
    number of raw windows merged into the detection (``detectMultiScale2``).
    """

    name = "haar"

    def __init__(
        self,
        cascade: str = "default",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int | None = DEFAULT_MAX_SIDE,
        calibration: Calibration | None = None,
    ):
        super().__init__(max_side=max_side, calibration=calibration)
        if not hasattr(cv2, "CascadeClassifier"):
            raise ImportError(f"the 'haar' detector needs cv2.CascadeClassifier, missing from OpenCV "
                              f"{cv2.__version__}: {_HINT}")
        path = cascade_path(cascade)
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise RuntimeError(f"OpenCV could not load the cascade {path}")
        self.cascade = cascade
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    @property
    def calibration_key(self) -> str:
        return f"{self.name}:{self.cascade}"

    @staticmethod
    def available() -> bool:
        if not hasattr(cv2, "CascadeClassifier"):
            return False
        try:
            cascade_path("default")
        except ImportError:
            return False
        return True

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        gray = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        rects, counts = self.classifier.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        # (x, y, w, h) covers pixels x .. x+w-1: as pixel-centre coordinates, x0=x and x1=x+w-1.
        return [
            Detection((float(x), float(y), float(x + w - 1), float(y + h - 1)), float(n))
            for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1))
        ]

"""The face-detector interface, the detector -> landmark-box calibration and the detector registry.

Every face detector draws its box by its own convention (dlib's HOG box is tight around eyes and
mouth, a Haar box is square and includes the forehead, ...). The landmark models want the
*landmark box* (the tight box of the 68 points, see :mod:`facemark.geometry`), so every detector
carries a per-detector linear calibration of that box relative to its own box ``(cx, cy, w, h)``::

    lcx = cx + a * w      lcy = cy + b * h      lw = c * w      lh = d * h

The constants are fitted on the training split only (``python -m bench.fit_detector_calibration``) and
shipped in ``facemark/detectors/calibration.json``; loading them needs no dataset.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from facemark.geometry import Box, box_centre, invert_affine, iou, upright_turn
from facemark.images import load_image
from facemark.placement import IDENTITY, Calibration, KeypointPlacement

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

#: Default cap on the longer image side before detection (images above it are downscaled).
DEFAULT_MAX_SIDE = 640


@dataclass(frozen=True)
class Detection:
    """One detected face: ``box`` ``(x0, y0, x1, y1)`` in the detector's own convention, and a score
    (higher is more confident; its scale is the detector's own). ``roll``: the face's in-plane
    tilt in degrees (counter-clockwise on screen) when the detector found it in a turned photo
    (``tilts``), and ``box`` is then the box of the face turned upright about the box centre.
    ``keypoints``: ``(n, 2)`` facial keypoints in the same pixels when the detector gives them
    (BlazeFace's six, :data:`facemark.detectors.blazeface.KEYPOINTS`), else None."""


    box: Box
    score: float
    roll: float = 0.0
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: where the landmark model cuts this face (:mod:`facemark.placement`): the 68-point landmark box
    #: of the face turned upright by ``roll``, computed once by the detector that found it
    #: (:meth:`Detector.detect`), from its keypoints where it has them, else from its box's calibration
    landmark_box: Box | None = None
    from_keypoints: bool = False  # the placement came from keypoints (a second pass is rarely needed)


def load_calibrations(path: str | Path = CALIBRATION_FILE) -> dict[str, dict]:
    """All entries of a calibration file: ``{detector name: {"a", "b", "c", "d", ...}}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return dict(data.get("detectors", {}))


@cache
def _shipped_calibrations() -> dict[str, dict]:
    return load_calibrations(CALIBRATION_FILE)


def calibration_for(name: str) -> Calibration | None:
    """The shipped calibration of detector ``name``, or None when none has been fitted."""
    entry = _shipped_calibrations().get(name)
    if entry is None:
        return None
    return Calibration(*(float(entry[k]) for k in "abcd"))


def placement_for(name: str) -> KeypointPlacement | None:
    """The shipped keypoint placement of detector ``name``, or None when it has none."""
    entry = _shipped_calibrations().get(name, {}).get("placement")
    return None if entry is None else KeypointPlacement(tuple(tuple(float(v) for v in row) for row in entry))


def downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its longer side is at most ``max_side``; returns ``(image, scale)``."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def unscale_box(box: Box, scale: float) -> Box:
    """A box found on an image downscaled by ``scale`` -> original pixel-centre coordinates."""
    if scale == 1.0:
        return tuple(float(v) for v in box)
    return tuple(float((v + 0.5) / scale - 0.5) for v in box)


def unscale_points(points: np.ndarray, scale: float) -> np.ndarray:
    """Points found on an image downscaled by ``scale`` -> original pixel-centre coordinates."""
    return points if scale == 1.0 else ((np.asarray(points, np.float64) + 0.5) / scale - 0.5).astype(np.float32)


class Detector(ABC):
    """A face detector.

    Subclasses implement :meth:`_detect` on a BGR image that is already downscaled to
    ``max_side``; :meth:`detect` does the downscaling, maps the boxes back to the input image
    and sorts them by score. ``calibration`` overrides the shipped one (``None`` = shipped; a
    detector with no shipped calibration uses the identity and warns once).
    """

    name: str = ""
    #: the pip extra that installs this detector's optional dependencies (for error messages)
    extra: str | None = None

    def __init__(self, max_side: int | None = DEFAULT_MAX_SIDE, calibration: Calibration | None = None,
                 tilts: tuple[float, ...] = ()):
        if max_side is not None and int(max_side) < 32:
            raise ValueError(f"max_side must be at least 32 pixels (or None for no downscaling), got {max_side}")
        self.max_side = None if max_side is None else int(max_side)
        self.tilts = tuple(float(t) for t in tilts)
        if any(not -90 <= t <= 90 or t == 0 for t in self.tilts):
            raise ValueError(f"tilts must be non-zero angles in -90..90 degrees, got {tilts!r}")
        self._calibration = calibration
        self._warned = False

    # -- detection -------------------------------------------------------------------------

    @abstractmethod
    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a (possibly downscaled) BGR uint8 image, in that image's coordinates."""

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in ``image_bgr`` (BGR, or gray/BGRA), sorted by score, highest first.

        When nothing is found upright and the detector has ``tilts``, the photo is searched again
        turned by each angle (about its centre): a strongly tilted head that an upright-trained
        detector misses. A face found at several angles is kept once, at its best score. Each comes
        back with its ``roll`` and as the detector
        box whose calibrated landmark box has the centre of the one found in the turned photo
        (turned back) and its size: the box of the face turned upright about that centre, which
        is how :meth:`facemark.api.Landmarker.detect` crops it."""
        image = load_image(image_bgr)  # gray, BGRA -> BGR (an array: no cap applies)
        small, scale = downscale(image, self.max_side)
        found = self._detect(small)
        if not found and self.tilts:  # every tilt; where two find the same face, the higher score wins
            tilted = sorted((d for angle in self.tilts for d in self._detect_tilted(small, angle)),
                            key=lambda d: d.score, reverse=True)
            boxes = [self.calibration.apply(d.box) for d in tilted]
            found = [d for k, d in enumerate(tilted) if all(iou(boxes[k], boxes[j]) < 0.3 for j in range(k))]
        found = [self.placed(Detection(unscale_box(d.box, scale), float(d.score), d.roll,
                                       None if d.keypoints is None else unscale_points(d.keypoints, scale),
                                       None if d.landmark_box is None else unscale_box(d.landmark_box, scale),
                                       d.from_keypoints)) for d in found]
        return sorted(found, key=lambda d: d.score, reverse=True)

    def _detect_tilted(self, image: np.ndarray, angle: float) -> list[Detection]:
        """Faces found in ``image`` turned by ``angle`` degrees, as boxes of ``image``."""
        height, width = image.shape[:2]
        matrix = upright_turn(((width - 1) / 2, (height - 1) / 2), -angle)  # turns the photo by `angle`
        turned = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = invert_affine(matrix)
        out = []
        for d in self._detect(turned):
            # the landmark box in the turned photo, its centre turned back and its size kept: the
            # tight box of a face's points turned by 35 degrees is only a little larger (300w-lite training faces)
            x0, y0, x1, y1 = self.calibration.apply(d.box)
            cx, cy = back[:, :2] @ box_centre((x0, y0, x1, y1)) + back[:, 2]
            half_w, half_h = (x1 - x0) / 2, (y1 - y0) / 2
            upright = (float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h))
            points = None if d.keypoints is None else (d.keypoints @ back[:, :2].T + back[:, 2]).astype(np.float32)
            # the crop goes to `upright` (the placement); the box in the detector's own convention
            # that calibrates to it is what Face.box shows
            placed = None if points is not None and self.placement is not None else upright  # keypoints place it
            out.append(Detection(self.calibration.invert(upright), d.score, roll=-float(angle), keypoints=points,
                                 landmark_box=placed))
        return out

    # -- calibration -----------------------------------------------------------------------

    @property
    def calibration_key(self) -> str:
        """The entry of ``calibration.json`` for this detector (its name, plus a variant that
        changes the box geometry, e.g. ``haar:alt2``)."""
        return self.name

    @property
    def calibration(self) -> Calibration:
        if self._calibration is not None:
            return self._calibration
        shipped = calibration_for(self.calibration_key)
        if shipped is None:
            if not self._warned:
                warnings.warn(
                    f"no calibration for detector {self.calibration_key!r} in {CALIBRATION_FILE.name}; its boxes are used "
                    "as landmark boxes unchanged (run python -m bench.fit_detector_calibration)",
                    stacklevel=2,
                )
                self._warned = True
            return IDENTITY
        return shipped

    def landmark_box(self, box: Box) -> Box:
        """This detector's ``box`` -> estimate of the tight 68-point landmark box."""
        return self.calibration.apply(box)

    @property
    def placement(self) -> KeypointPlacement | None:
        """The keypoint placement of this detector (None: it gives no keypoints, or none is fitted)."""
        if "_placement" not in self.__dict__:
            self._placement = placement_for(self.calibration_key)
        return self._placement

    def placed(self, detection: Detection) -> Detection:
        """``detection`` with its placement (:mod:`facemark.placement`), once: from its keypoints when
        the detector gives them and has a fitted :class:`~facemark.placement.KeypointPlacement`, else
        its box through the calibration, with the detection's roll. One that has a placement already
        (a face found in a turned photo, or by a fallback detector) keeps it."""
        if detection.landmark_box is not None:
            return detection
        if detection.keypoints is not None and self.placement is not None:
            box, roll = self.placement.apply(detection.box, detection.keypoints)
            return replace(detection, landmark_box=box, roll=roll, from_keypoints=True)
        return replace(detection, landmark_box=self.landmark_box(detection.box))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, max_side={self.max_side})"


def missing_dependency(detector: str, what: str, extra: str | None, hint: str = "") -> ImportError:
    """The ImportError raised when an optional dependency of ``detector`` is not installed."""
    install = f"pip install facemark[{extra}]" if extra else ""
    msg = f"the {detector!r} detector needs {what}"
    if install:
        msg += f": install it with `{install}`"
    if hint:
        msg += f" ({hint})" if install else f": {hint}"
    return ImportError(msg)


# -- registry --------------------------------------------------------------------------------

# name -> "module:attribute"; modules are imported on first use, so an optional dependency is
# only needed by the detector that uses it.
_REGISTRY: dict[str, str | Callable[..., Detector]] = {}


def register_detector(name: str, factory: str | Callable[..., Detector]) -> None:
    """Register ``factory`` (a callable, or a lazy ``"module:attr"`` string) under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"detector {name!r} is already registered")
    _REGISTRY[name] = factory


def list_detectors(available_only: bool = False) -> list[str]:
    """Registered detector names; with ``available_only``, those whose dependencies are installed."""
    names = sorted(_REGISTRY)
    if available_only:
        names = [n for n in names if detector_available(n)]
    return names


def _factory(name: str) -> Callable[..., Detector]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; known detectors: {', '.join(list_detectors())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def get_detector(name: str, **kw) -> Detector:
    """Build the detector ``name`` (keyword arguments go to its constructor).

    Raises ValueError for an unknown name and ImportError (naming the pip extra) when an
    optional dependency of that detector is missing.
    """
    return _factory(name)(**kw)


def detector_available(name: str) -> bool:
    """Whether ``name``'s optional dependencies (libraries, model files) are present."""
    factory = _factory(name)
    check = getattr(factory, "available", None)
    if check is None:
        return True
    try:
        return bool(check())
    except ImportError:
        return False


def _finite_box(box) -> Box:
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box is 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    if not (values[2] > values[0] and values[3] > values[1]):
        raise ValueError(f"box {box!r} is empty: expected x1 > x0 and y1 > y0")
    return values

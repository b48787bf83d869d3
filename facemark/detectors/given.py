"""``GivenBoxes``: a "detector" that returns boxes the user supplied (e.g. ``--boxes boxes.json``).

A boxes file is JSON, either

* a list of boxes, used for every image: ``[[x0, y0, x1, y1], ...]``, or
* an object keyed by image: ``{"photo.jpg": [[x0, y0, x1, y1], ...], ...}``; a key is matched
  against the image's path as given, then its file name, then its file name without suffix.
  A single box may stand without the outer list.

A box is ``[x0, y0, x1, y1]`` or ``{"box": [x0, y0, x1, y1], "score": s, "roll": r}`` (score 1
and roll 0 if absent), in 0-based pixel-centre coordinates. ``roll`` (degrees, counter-clockwise on
screen): the face is tilted by it, and ``box`` is its box turned upright about the box's centre
(as :class:`~facemark.detectors.base.Detection` has it); the landmark model then crops it upright.
``box_style`` says what the boxes are:

* ``"landmark"`` (default): landmark-style boxes, the tight box of the 68 points; used as they
  are (identity calibration);
* ``"face"``: face boxes drawn by facemark's crop recipe (:func:`facemark.geometry.crop_box_from_box`,
  forehead included); mapped back to landmark boxes by inverting the recipe's margins.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facemark.detectors.base import IDENTITY, Box, Calibration, Detection, Detector, _finite_box
from facemark.geometry import SEED_CROP, CropRule

BOX_STYLES = ("landmark", "face")


def face_box_calibration(rule: CropRule = SEED_CROP) -> Calibration:
    """The calibration that undoes ``rule``'s margins: face (crop) box -> landmark box.

    (The recipe's half-pixel shift between point centres and crop edges is below annotation
    noise and is left out, so the map stays linear.)
    """
    c = 1.0 / (1.0 + 2.0 * rule.side)
    d = 1.0 / (1.0 + rule.top + rule.bottom)
    return Calibration(a=0.0, b=(rule.top - rule.bottom) / 2.0 * d, c=c, d=d)


def _real(value) -> bool:
    """A finite real number (an int or a float, numpy's too), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _box(value) -> tuple[float, float, float, float]:
    try:
        values = [] if isinstance(value, (str, bytes, Mapping)) else list(value)
    except TypeError:  # not a sequence
        values = []
    if len(values) != 4 or not all(_real(v) for v in values):
        raise ValueError(f"a box is 4 finite numbers (x0, y0, x1, y1), got {value!r}")
    return _finite_box(values)


def _parse_detections(value, where: str) -> list[Detection]:
    if isinstance(value, Mapping) or (
        isinstance(value, Sequence) and len(value) == 4 and all(isinstance(v, numbers.Real) for v in value)
    ):
        value = [value]  # a single box
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{where}: expected a list of boxes, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        score, roll = 1.0, 0.0
        try:
            if isinstance(item, Mapping):
                if "box" not in item:
                    raise ValueError("a box object needs a 'box' key")
                score, roll = item.get("score", 1.0), item.get("roll", 0.0)
                if not _real(score):
                    raise ValueError(f"score must be a finite number, got {score!r}")
                if not _real(roll) or not -180 <= roll <= 180:
                    raise ValueError(f"roll must be in -180..180 degrees, got {roll!r}")
                item = item["box"]
            out.append(Detection(_box(item), float(score), float(roll)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}[{i}]: {e}") from None
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_boxes(path: str | Path) -> list[Detection] | dict[str, list[Detection]]:
    """Read a boxes JSON file (see the module docstring): a list (all images) or a per-image dict.
    Strict JSON: ``NaN`` and ``Infinity`` are refused, and so are numbers beyond the float range (``1e400``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a boxes file (nested too deeply)") from None
    if isinstance(data, Mapping):
        return {str(k): _parse_detections(v, f"{path}: {k!r}") for k, v in data.items()}
    return _parse_detections(data, str(path))


class GivenBoxes(Detector):
    """Returns the supplied boxes instead of detecting.

    ``boxes``: a list of boxes (every image) or a dict ``{image key: boxes}`` (then
    :meth:`detect` needs ``key=``); ``box_style``: ``"landmark"`` or ``"face"`` (see module).
    """

    name = "given"

    def __init__(
        self,
        boxes: Sequence | Mapping | None = None,
        box_style: str = "landmark",
        calibration: Calibration | None = None,
        max_side: int | None = None,
    ):
        if box_style not in BOX_STYLES:
            raise ValueError(f"box_style must be one of {BOX_STYLES}, got {box_style!r}")
        if calibration is None:
            calibration = IDENTITY if box_style == "landmark" else face_box_calibration()
        super().__init__(max_side=max_side, calibration=calibration)
        self.box_style = box_style
        self.boxes: list[Detection] | dict[str, list[Detection]] = []
        self.set_boxes([] if boxes is None else boxes)

    @classmethod
    def from_json(cls, path: str | Path, **kw) -> GivenBoxes:
        return cls(load_boxes(path), **kw)

    def set_boxes(self, boxes: Sequence | Mapping) -> None:
        """Replace the boxes (a list for every image, or a per-image dict)."""
        if isinstance(boxes, Mapping):
            self.boxes = {str(k): self._as_detections(v, repr(k)) for k, v in boxes.items()}
        else:
            self.boxes = self._as_detections(boxes, "boxes")

    @staticmethod
    def _as_detections(value, where: str) -> list[Detection]:
        if isinstance(value, Sequence) and value and all(isinstance(v, Detection) for v in value):
            return list(value)
        return _parse_detections(value, where)

    def boxes_for(self, key: str | Path | None = None) -> list[Detection]:
        """The boxes for image ``key`` (a path or name; ignored when the boxes are one list)."""
        if not isinstance(self.boxes, dict):
            return list(self.boxes)
        if key is None:
            raise ValueError("these boxes are given per image: pass the image's path or name as key=")
        key = Path(key)
        for candidate in (str(key), key.name, key.stem):
            if candidate in self.boxes:
                return list(self.boxes[candidate])
        raise KeyError(f"no boxes given for image {str(key)!r}")

    def detect(self, image_bgr: np.ndarray | None = None, key: str | Path | None = None) -> list[Detection]:
        """The given boxes (the image is not looked at), sorted by score, each placed (its landmark box
        through ``box_style``'s calibration, its roll as given)."""
        return sorted((self.placed(d) for d in self.boxes_for(key)), key=lambda d: d.score, reverse=True)

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:  # pragma: no cover - detect() overrides
        return self.boxes_for(None)

    def landmark_box(self, box: Box) -> Box:
        return self.calibration.apply(box)

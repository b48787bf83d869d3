"""The crop rule, written once: how a face box becomes the model's input crop and back.

Conventions used everywhere in facemark:

* points are ``(x, y)`` in 0-based pixel-centre coordinates: the centre of the top-left pixel
  is ``(0, 0)`` and that pixel covers ``[-0.5, 0.5] x [-0.5, 0.5]``;
* boxes are ``(x0, y0, x1, y1)`` in the same coordinates; the *landmark box* of a face is the
  tight box of its points (the 300-W ground-truth-box protocol);
* batches of points are ``(B, K, 2)``;
* *normalised* points are in ``0..1`` of the crop box: ``(0, 0)`` is the crop's top-left
  edge and ``(1, 1)`` its bottom-right edge, independent of the input resolution.

The crop box comes from the landmark box by the seed recipe: the top moves up by 30 % of the box
height, the bottom down by 5 %, the sides out by 5 % of the width; the recipe then clips the box
to the image. Training, evaluation, inference and the HTTP service all call
:func:`crop_box_from_box`, :func:`crop_affine` and :func:`from_crop` from here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]


#: the range of each crop margin (a fraction of the landmark box's height or width)
CROP_MARGIN_RANGE = (-0.5, 2.0)
#: the smallest crop box a rule may give, as a fraction of the landmark box on each axis: margins
#: that shrink the crop to nothing (top + bottom = -1, side = -0.5) leave no pixels to look at
MIN_CROP_EXTENT = 0.5


class CropRuleError(ValueError):
    """A crop rule value that cannot be used: ``key`` (top, bottom, side, clip), ``value`` and ``why``."""

    def __init__(self, key: str, value, why: str):
        super().__init__(f"crop.{key} = {value!r}: {why}")
        self.key, self.value, self.why = key, value, why


@dataclass(frozen=True)
class CropRule:
    """Margins (fractions of the landmark box) that turn a landmark box into a crop box.

    Checked when made (from a config, a checkpoint, a model file or code): each margin a finite
    number in :data:`CROP_MARGIN_RANGE`, ``clip`` a bool, and the crop box at least
    :data:`MIN_CROP_EXTENT` of the landmark box on each axis; :class:`CropRuleError` otherwise."""

    top: float = 0.30
    bottom: float = 0.05
    side: float = 0.05
    clip: bool = True  # the recipe clips the crop box to the image; False pads instead

    def __post_init__(self):
        low, high = CROP_MARGIN_RANGE
        for key in ("top", "bottom", "side"):
            value = getattr(self, key)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or not low <= value <= high):
                raise CropRuleError(key, value, f"expected a number in {low}..{high}")
        if not isinstance(self.clip, bool):
            raise CropRuleError("clip", self.clip, "expected true or false")
        if 1 + 2 * self.side < MIN_CROP_EXTENT:
            raise CropRuleError("side", self.side, f"the crop box would be {1 + 2 * self.side:g}x the landmark box's "
                                                   f"width; it must be at least {MIN_CROP_EXTENT}x")
        if 1 + self.top + self.bottom < MIN_CROP_EXTENT:
            raise CropRuleError("top", self.top, f"with bottom = {self.bottom!r} the crop box would be "
                                                 f"{1 + self.top + self.bottom:g}x the landmark box's height; it must "
                                                 f"be at least {MIN_CROP_EXTENT}x")

    def to_dict(self) -> dict:
        return asdict(self)


SEED_CROP = CropRule()


def box_from_points(points: np.ndarray) -> Box:
    """Tight box ``(x0, y0, x1, y1)`` of ``(K, 2)`` points (the landmark box); missing (NaN) points
    are left out, so partially labelled faces get the box of their present points."""
    points = np.asarray(points, dtype=np.float64)
    if np.isnan(points).any():
        points = points[~np.isnan(points).any(axis=1)]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


#: how far beyond its image a face box may reach, in image sizes (width for x, height for y): a box
#: further out (a 1e9-pixel box) is a typo, and its points would overflow the drawing and the JSON
BOX_MARGIN = 1.0


def check_box(box: Box, image_size: tuple[int, int]) -> None:
    """ValueError unless ``box`` is finite, non-empty and within :data:`BOX_MARGIN` image sizes of the
    ``(width, height)`` image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = image_size
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {tuple(box)} is not 4 finite numbers with x1 > x0 and y1 > y0")
    if (min(x0, x1) < -BOX_MARGIN * width or max(x0, x1) > (1 + BOX_MARGIN) * width
            or min(y0, y1) < -BOX_MARGIN * height or max(y0, y1) > (1 + BOX_MARGIN) * height):
        raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches more than {BOX_MARGIN:g}x the image size "
                         f"outside the {width}x{height} image")


def crop_box_from_box(box: Box, image_size: tuple[int, int] | None, rule: CropRule = SEED_CROP) -> Box:
    """Crop box (pixel-edge coordinates, see :func:`to_crop`) for a landmark box.

    ``image_size`` is ``(width, height)``; it is needed when ``rule.clip`` is set.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {box} is empty: expected x1 > x0 and y1 > y0")
    w, h = x1 - x0, y1 - y0
    # Edges of the landmark box: points are pixel centres, the crop starts half a pixel out.
    left, right = x0 + 0.5 - rule.side * w, x1 + 0.5 + rule.side * w
    top, bottom = y0 + 0.5 - rule.top * h, y1 + 0.5 + rule.bottom * h
    if rule.clip:
        if image_size is None:
            raise ValueError("image_size is required when the crop rule clips to the image")
        width, height = image_size
        left, top = max(left, 0.0), max(top, 0.0)
        right, bottom = min(right, float(width)), min(bottom, float(height))
        if right - left < 1 or bottom - top < 1:
            raise ValueError(f"box {box} lies outside the {width}x{height} image")
    return left, top, right, bottom


def to_crop(points: np.ndarray, crop_box: Box) -> np.ndarray:
    """Pixel points ``(..., 2)`` -> normalised ``0..1`` coordinates of ``crop_box``."""
    left, top, right, bottom = crop_box
    scale = np.array([right - left, bottom - top], dtype=np.float64)
    return ((np.asarray(points, dtype=np.float64) + 0.5 - (left, top)) / scale).astype(np.float32)


def landmark_box_in_crop(rule: CropRule) -> tuple[float, float, float, float]:
    """Where the tight landmark box lies in an unclipped crop, in 0..1 crop coordinates.

    Fixed for a crop rule (the crop box is the landmark box grown by fixed fractions), which is
    what lets the classical models take a crop instead of an image and a box.
    """
    if rule.clip:
        raise ValueError("the landmark box has a fixed place only in an unclipped crop (crop.clip: false): a clipped crop moves the "
                         "face (classical models need one)")
    box = (0.0, 0.0, 1000.0, 1000.0)
    crop_box = crop_box_from_box(box, None, rule)
    (x0, y0), (x1, y1) = to_crop([box[:2], box[2:]], crop_box)
    return float(x0), float(y0), float(x1), float(y1)


def from_crop(normalised: np.ndarray, crop_box: Box, turn: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`to_crop`: normalised crop coordinates -> original-image pixels. ``turn``:
    the crop was cut from the image turned by this 2x3 matrix (:func:`crop_image`); the points are
    turned back."""
    left, top, right, bottom = crop_box
    scale = np.array([right - left, bottom - top], dtype=np.float64)
    points = (np.asarray(normalised, dtype=np.float64) * scale + (left, top) - 0.5).astype(np.float32)
    return points if turn is None else apply_affine(invert_affine(turn), points)


def crop_affine(crop_box: Box, size: int | tuple[int, int]) -> np.ndarray:
    """2x3 matrix mapping original pixel centres to pixel centres of the ``size`` crop image."""
    out_w, out_h = (size, size) if isinstance(size, int) else size
    left, top, right, bottom = crop_box
    sx, sy = out_w / (right - left), out_h / (bottom - top)
    # pixel centre x has edge coordinate x + 0.5; output centre j has edge coordinate j + 0.5
    return np.array([[sx, 0.0, sx * (0.5 - left) - 0.5], [0.0, sy, sy * (0.5 - top) - 0.5]])


def warp(image: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` (source pixel centres -> output pixel centres)."""
    out_w, out_h = (size, size) if isinstance(size, int) else size
    return cv2.warpAffine(
        image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def crop_image(image: np.ndarray, crop_box: Box, size: int | tuple[int, int], turn: np.ndarray | None = None,
               ) -> np.ndarray:
    """Cut ``crop_box`` out of ``image`` and resize it to ``size`` (the recipe's crop + resize).
    ``turn``: a 2x3 matrix (:func:`upright_turn`) turning the image first, ``crop_box`` being a
    box of the turned image: how a tilted face is cut upright."""
    matrix = crop_affine(crop_box, size)
    if turn is not None:
        matrix = matrix @ np.vstack([turn, [0.0, 0.0, 1.0]])
    return warp(image, matrix, size)


def rotate_face(image: np.ndarray, points: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image`` and its ``(K, 2)`` points rotated by ``angle`` degrees (counter-clockwise on screen)
    about the centre of the points' box: a tilted head, for robustness figures. Same image size;
    corners that come from outside the photo are black, as in a crop past the border. Returns the
    image, the points and the 2x3 matrix (original pixels -> rotated pixels)."""
    matrix = cv2.getRotationMatrix2D(box_centre(box_from_points(points)), float(angle), 1.0)
    height, width = image.shape[:2]
    return warp(image, matrix, (width, height)), apply_affine(matrix, points).astype(np.float64), matrix


def upright_turn(centre: tuple[float, float], roll: float) -> np.ndarray:
    """2x3 matrix turning a face rolled by ``roll`` degrees (counter-clockwise on screen) upright
    about ``centre``: original pixels -> upright-frame pixels."""
    return cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -float(roll), 1.0)


def turned_box(points: np.ndarray, roll: float) -> Box:
    """The box of ``points`` turned upright (a face rolled by ``roll`` degrees) about the box's own
    centre: with it and the roll, :func:`crop_image` cuts the face upright, as
    :class:`~facemark.detectors.base.Detection` boxes with a roll are cut."""
    first = upright_turn(box_centre(box_from_points(points)), roll)
    centre = apply_affine(invert_affine(first), [box_centre(box_from_points(apply_affine(first, points)))])[0]
    turn = upright_turn(tuple(float(v) for v in centre), roll)  # same turn, shifted: its centre is the box's
    return box_from_points(apply_affine(turn, points))


def jitter_box(rng: np.random.Generator, box: Box, amount: float) -> Box:
    """``box`` with each edge moved by up to ``amount`` of the box's width or height (uniform, from ``rng``):
    training's box noise, and evaluation's jittered boxes for robustness figures."""
    if not amount:
        return box
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d = rng.uniform(-amount, amount, size=4) * (w, h, w, h)
    return x0 + d[0], y0 + d[1], x1 + d[2], y1 + d[3]


def box_centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def crops_to_input(crops_bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR crops ``(B, S, S, 3)`` -> the models' input: float32 RGB ``(B, 3, S, S)`` in 0..1."""
    crops = np.asarray(crops_bgr)[..., ::-1].transpose(0, 3, 1, 2)
    return np.multiply(crops, np.float32(1 / 255), dtype=np.float32)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Transform ``(..., 2)`` points by a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (continuous coordinates)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def best_match(boxes: Sequence[Box], target: Box) -> tuple[int | None, float]:
    """Index and IoU of the box in ``boxes`` that overlaps ``target`` most (``None, 0`` when none do)."""
    best, best_iou = None, 0.0
    for i, box in enumerate(boxes):
        value = iou(box, target)
        if value > best_iou:
            best, best_iou = i, value
    return best, best_iou

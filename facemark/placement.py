"""Placement: where the landmark model cuts a face. One home for the rules, all pure functions.

A placement is ``(box, roll)``: ``roll`` is the face's in-plane tilt (degrees, counter-clockwise on
screen, the one convention of :mod:`facemark.geometry`) and ``box`` the tight box of its points
(68-point landmark box) with the face turned upright about the box's centre; :func:`facemark.geometry.crop_image`
then cuts the face upright. A placement comes from one of three sources:

* a detector box, through the detector's :class:`Calibration` (fitted on the training split:
  :func:`facemark.calibrate.fit_calibration`);
* a detector's keypoints (BlazeFace's six), through its :class:`KeypointPlacement`
  (:func:`facemark.calibrate.fit_placement`);
* points a model predicted (the previous video frame, or a first pass): :func:`from_points`;
  a tracked face's crop follows them through a :class:`SteadyPlacement`.

The detector that finds a face computes its placement once (:class:`facemark.detectors.base.Detection`
carries ``landmark_box`` and ``roll``); the :class:`~facemark.Landmarker` cuts the crop there. A face
placed from keypoints is predicted once, where they place it (until Step 18 it was cut again where
its roll disagreed with its points' by more than 5 degrees: 3 % of the validation faces, no
measurable gain on them, tilted or degraded, or on the AFLW list, for 7 % of a photo's time:
docs/detectors.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from facemark.filters import OneEuroFilter, check_filter_settings
from facemark.geometry import Box, box_centre, turned_box, upright_turn


def eye_roll(right, left) -> float:
    """The in-plane tilt, degrees counter-clockwise on screen, of a face whose right eye (the
    subject's: on the image's left) is at ``right`` and left eye at ``left``."""
    right, left = np.asarray(right, np.float64), np.asarray(left, np.float64)
    return float(np.degrees(np.arctan2(-(left[1] - right[1]), left[0] - right[0])))


def keypoint_roll(keypoints: np.ndarray) -> float:
    """:func:`eye_roll` of detector keypoints whose first two are the right and left eye."""
    return eye_roll(keypoints[0], keypoints[1])


def points_roll(points: np.ndarray, scheme) -> float:
    """:func:`eye_roll` of a face's points in ``scheme`` (its pupils: the means of its eye points)."""
    return eye_roll(*scheme.pupils(np.asarray(points, np.float64)))


def from_points(points: np.ndarray, scheme) -> tuple[Box, float]:
    """The placement of the face of ``points``: the box of the points turned upright, and the roll."""
    roll = points_roll(points, scheme)
    return turned_box(np.asarray(points, np.float64), roll), roll


#: a face's roll is filtered as the move it gives the eyes: about this many face sizes per radian
ROLL_REACH = 0.25


@dataclass(frozen=True)
class Steadiness:
    """How a tracked face's crop follows its points (:class:`SteadyPlacement`): a One-Euro filter
    (:class:`facemark.filters.OneEuroFilter`) on the placement's centre and size (in units of the
    face's first size) and roll (as the move it gives the eyes, :data:`ROLL_REACH`), then a step ahead by the filtered speed (``ahead``). At
    rest the crop hardly moves (``min_cutoff``, Hz), so the network sees the same crop frame after
    frame and the points' noise is not fed back into the next crop; moving, the cutoff rises by
    ``beta`` x speed and the step ahead keeps the face centred. The defaults come from
    ``python -m bench.bench_video`` (bench/results/video.md)."""

    min_cutoff: float = 0.3
    beta: float = 300.0
    d_cutoff: float = 1.0
    ahead: bool = True

    def __post_init__(self):
        check_filter_settings(self)


class SteadyPlacement:
    """Where to cut one tracked face frame after frame: each :meth:`__call__` takes the placement
    its latest points give (:func:`from_points`) and returns the steadied one (:class:`Steadiness`)."""

    def __init__(self, settings: Steadiness = Steadiness()):
        self.settings = settings
        s = settings
        self.filter = OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff)
        self.scale: float | None = None

    def __call__(self, placement: tuple[Box, float], t: float) -> tuple[Box, float]:
        """The crop's placement for the frame at ``t`` seconds (increasing), from ``placement`` (the
        previous frame's points'): a frame gap ahead of the filtered one."""
        dt = 0.0 if self.filter.t is None else max(t - self.filter.t, 0.0)
        (x0, y0, x1, y1), roll = placement
        w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
        if self.scale is None:
            self.scale = math.sqrt(w * h)
        if self.filter.x is not None:  # the short way round from the filtered roll
            last = self.filter.x[4] / ROLL_REACH
            roll = math.degrees(last + (math.radians(roll) - last + math.pi) % (2 * math.pi) - math.pi)
        state = np.array([(x0 + x1) / 2 / self.scale, (y0 + y1) / 2 / self.scale, math.log(w), math.log(h),
                          math.radians(roll) * ROLL_REACH])
        state = self.filter(state, t)
        if self.settings.ahead:
            state = state + self.filter.dx * dt
        cx, cy, w, h = state[0] * self.scale, state[1] * self.scale, math.exp(state[2]), math.exp(state[3])
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), math.degrees(state[4] / ROLL_REACH)


@dataclass(frozen=True)
class Calibration:
    """Landmark box from a detector box: ``lcx = cx + a*w, lcy = cy + b*h, lw = c*w, lh = d*h``."""

    a: float = 0.0
    b: float = 0.0
    c: float = 1.0
    d: float = 1.0

    def apply(self, box: Box) -> Box:
        x0, y0, x1, y1 = (float(v) for v in box)
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        lcx, lcy, lw, lh = cx + self.a * w, cy + self.b * h, self.c * w, self.d * h
        return lcx - lw / 2, lcy - lh / 2, lcx + lw / 2, lcy + lh / 2

    def invert(self, box: Box) -> Box:
        """The detector box whose calibrated landmark box is ``box`` (the inverse of :meth:`apply`)."""
        x0, y0, x1, y1 = (float(v) for v in box)
        lcx, lcy, lw, lh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        w, h = lw / self.c, lh / self.d
        cx, cy = lcx - self.a * w, lcy - self.b * h
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def to_dict(self) -> dict:
        return asdict(self)


IDENTITY = Calibration()


def placement_features(box: Box, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """What :class:`KeypointPlacement` regresses on: the keypoints turned upright (by
    :func:`keypoint_roll`) about the detector box's centre, relative to it in units of the box's
    size, and a constant 1. Returns ``(features (2n + 1,), centre, size, roll)``."""
    centre = np.array(box_centre(box), np.float64)
    size = float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))
    roll = keypoint_roll(keypoints)
    turned = (np.asarray(keypoints, np.float64) - centre) @ upright_turn((0.0, 0.0), roll)[:, :2].T
    return np.append(turned.ravel() / size, 1.0), centre, size, roll


@dataclass(frozen=True)
class KeypointPlacement:
    """Where the landmark model's crop goes for a face a detector gave keypoints for: the face's
    roll from its eye keypoints, and its landmark box (the tight box of its 68 points turned
    upright about the box's centre) by a linear map of :func:`placement_features` to
    ``(centre x, centre y, width, height)`` of that box relative to the detector box's centre, in
    units of its size. Fitted on the training split (:func:`facemark.calibrate.fit_placement`)."""

    weights: tuple[tuple[float, float, float, float], ...]  # (2n + 1, 4)

    def apply(self, box: Box, keypoints: np.ndarray) -> tuple[Box, float]:
        """``(landmark box of the face turned upright, roll)`` for one detection."""
        features, centre, size, roll = placement_features(box, keypoints)
        weights = np.asarray(self.weights, np.float64)
        if weights.shape != (len(features), 4):
            raise ValueError(f"keypoint placement expects {weights.shape[0]} features, got {len(features)}")
        dx, dy, w, h = features @ weights * size
        cx, cy = centre + np.array([dx, dy]) @ upright_turn((0.0, 0.0), -roll)[:, :2].T  # back to the image
        return (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)), roll

"""Faces over time: follow faces from video frame to frame and smooth their points.

:class:`FaceTracker` matches each frame's faces (from :meth:`facemark.Landmarker.detect`) to the
previous frames' by the IoU of their boxes and smooths each face's points with a One-Euro filter
per point (Casiez, Roussel and Vogel, CHI 2012); every face it returns carries its ``track`` id::

    tracker = FaceTracker()
    for index, frame in enumerate(frames):
        faces = tracker.update(landmarker.detect(frame), index / fps)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from facemark.api import Face
from facemark.geometry import box_from_points, iou


class OneEuroFilter:
    """The One-Euro filter (Casiez et al. 2012) on arrays, each element filtered independently.

    An exponential low-pass whose cutoff rises with the signal's speed: at rest it smooths hard
    (``min_cutoff``, Hz; lower = less jitter but more lag), when the signal moves the cutoff grows by
    ``beta`` x speed (higher = less lag on fast motion). ``d_cutoff`` (Hz) smooths the speed estimate.
    Speeds are in the signal's units per second, so ``beta`` depends on the units.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(dt: float, cutoff) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filtered value of sample ``x`` taken at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = max(float(t) - self.t, 1e-6)
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(dt, self.d_cutoff) * (dx - self.dx)
        alpha = self._alpha(dt, self.min_cutoff + self.beta * np.abs(self.dx))
        self.x, self.t = self.x + alpha * (x - self.x), float(t)
        return self.x.copy()


@dataclass(frozen=True)
class Smoothing:
    """Video smoothing settings.

    The filter sees points in units of the face's size (square root of its landmark-box area when
    the face was first seen), so one setting suits small and large faces: ``beta = 5`` raises the
    cutoff by 5 Hz for a point moving one face size per second. The defaults, on a simulated 30 fps
    signal: jitter at rest cut to about 0.4x, a sudden jump of 20 % of the face size followed within
    2 frames, a slow drift (0.3 face sizes/s) trailed by about 1 % of the face size. A face continues a track when its
    box overlaps the track's last box with IoU >= ``min_iou``; a track unmatched for more than
    ``max_missed`` frames is dropped (a face seen again later starts a fresh filter).
    """

    min_cutoff: float = 0.5
    beta: float = 5.0
    d_cutoff: float = 1.0
    min_iou: float = 0.3
    max_missed: int = 5


class FaceTracker:
    """Follows faces across video frames by box IoU and smooths each face's points."""

    def __init__(self, settings: Smoothing = Smoothing()):
        self.settings = settings
        self.tracks: list[dict] = []  # {"id", "box", "scale", "filter", "missed"}
        self._next_id = 0

    def update(self, faces: Sequence[Face], t: float) -> list[Face]:
        """Smoothed copies of ``faces`` (frame at time ``t`` seconds), each with its ``track`` id."""
        s = self.settings
        pairs = sorted(
            ((iou(face.box, track["box"]), i, j)
             for i, face in enumerate(faces) for j, track in enumerate(self.tracks)),
            reverse=True,
        )
        match: dict[int, dict] = {}
        used: set[int] = set()
        for overlap, i, j in pairs:  # greedy: best overlaps first
            if overlap < s.min_iou:
                break
            if i not in match and j not in used:
                match[i] = self.tracks[j]
                used.add(j)
        for j, track in enumerate(self.tracks):
            track["missed"] = 0 if j in used else track["missed"] + 1
        self.tracks = [track for track in self.tracks if track["missed"] <= s.max_missed]
        out = []
        for i, face in enumerate(faces):
            track = match.get(i)
            if track is None:
                x0, y0, x1, y1 = box_from_points(face.points)
                track = {"id": self._next_id, "scale": max(math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0)), 1.0),
                         "filter": OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff), "missed": 0}
                self._next_id += 1
                self.tracks.append(track)
            track["box"] = face.box
            points = track["filter"](np.asarray(face.points, np.float64) / track["scale"], t) * track["scale"]
            out.append(replace(face, points=points.astype(np.float32), track=track["id"]))
        return out

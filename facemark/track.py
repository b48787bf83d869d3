"""Faces over time: follow faces from video frame to frame and smooth their points.

:class:`VideoTracker` (what :meth:`facemark.Landmarker.track` runs) runs the detector on the first
frame, then every ``every`` frames or when a track is lost; in between, each face is cut where its
points in the previous frame place it (box and roll, :func:`facemark.placement.from_points`), as
production face trackers do: no detector, one crop per face and frame (with its mirror where the
flip test is on: the model's own setting, or ``flip=``). :class:`FaceTracker` gives each face a stable ``track_id`` (greedy IoU matching of
landmark boxes) and smooths its points with a One-Euro filter per point (Casiez, Roussel and Vogel,
CHI 2012)::

    for faces in landmarker.track(frames, every=10):   # each face carries face.track_id
        ...

There is no annotated video: :func:`facemark.clips.make_clip` makes clips with exactly known points from
annotated photos, what ``python -m bench.bench_video`` and the tests measure tracking on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from facemark.face import Face
from facemark.geometry import Box, box_from_points, iou
from facemark.images import load_image


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
    the face was first seen), so one setting suits small and large faces: ``beta = 100`` raises the
    cutoff by 100 Hz for a point moving one face size per second (a 170 px face moving 6 px per
    frame at 30 fps: about 100 Hz, next to no smoothing), while at rest the cutoff stays near
    ``min_cutoff``. The defaults come from ``python -m bench.bench_video`` (bench/results/video.md):
    ``beta`` is the setting that matters, and 100 is the smallest swept value (30, 60, 100, 200) that
    keeps NME on moving clips close to per-frame detection's; ``min_cutoff`` changes little between
    0.1 and 1 Hz (the flicker, NME and lag of each setting: bench/results/video.md). A face continues
    a track when its landmark box overlaps the track's last one with IoU >= ``min_iou``; a track
    unmatched for more than ``max_missed`` frames is dropped (a face seen again later starts a fresh filter).
    """

    min_cutoff: float = 0.3
    beta: float = 100.0
    d_cutoff: float = 1.0
    min_iou: float = 0.3
    max_missed: int = 5


class FaceTracker:
    """Follows faces across video frames by the IoU of their landmark boxes and smooths each face's
    points (``smooth=False``: ids only, points untouched)."""

    def __init__(self, settings: Smoothing = Smoothing(), smooth: bool = True):
        self.settings, self.smooth = settings, smooth
        self.tracks: list[dict] = []  # {"id", "box", "scale", "filter", "missed"}
        self._next_id = 0

    def update(self, faces: Sequence[Face], t: float) -> list[Face]:
        """Smoothed copies of ``faces`` (frame at time ``t`` seconds), each with its ``track_id``."""
        s = self.settings
        boxes = [box_from_points(face.points) for face in faces]
        pairs = sorted(
            ((iou(box, track["box"]), i, j)
             for i, box in enumerate(boxes) for j, track in enumerate(self.tracks)),
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
            track["box"] = boxes[i]
            points = face.points
            if self.smooth:
                points = (track["filter"](np.asarray(points, np.float64) / track["scale"], t) * track["scale"]).astype(np.float32)
            out.append(replace(face, points=points, track_id=track["id"]))
        return out


MAX_OUTSIDE = 0.25  # a track is lost when more than this share of its points leaves the frame
MIN_QUALITY = 0.3  # ... or when its Face.quality (where the model gives one) falls below this
MIN_SIZE = 8.0  # ... or when its landmark box shrinks below this many pixels


def track_lost(face: Face, image_size: tuple[int, int]) -> bool:
    """Whether a face followed from the previous frame's points must go back to the detector."""
    width, height = image_size
    points = np.asarray(face.points, np.float64)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    x0, y0, x1, y1 = box_from_points(points)
    quality = getattr(face, "quality", None)
    return (1.0 - inside.mean() > MAX_OUTSIDE or min(x1 - x0, y1 - y0) < MIN_SIZE
            or (quality is not None and quality < MIN_QUALITY))


def _follow_box(face_box: Box, was: Box, now: Box) -> Box:
    """The detector's ``face_box`` moved and scaled as the landmark box moved from ``was`` to ``now``."""
    scale = math.sqrt(max((now[2] - now[0]) * (now[3] - now[1]), 1e-6) / max((was[2] - was[0]) * (was[3] - was[1]), 1e-6))
    cx0, cy0, cx1, cy1 = (was[0] + was[2]) / 2, (was[1] + was[3]) / 2, (now[0] + now[2]) / 2, (now[1] + now[3]) / 2
    return (cx1 + scale * (face_box[0] - cx0), cy1 + scale * (face_box[1] - cy0),
            cx1 + scale * (face_box[2] - cx0), cy1 + scale * (face_box[3] - cy0))


class Landmarks(Protocol):
    """What :class:`VideoTracker` asks of its landmarker (:class:`facemark.Landmarker` is one)."""

    def detect(self, image, max_faces: int | None = None, boxes: Sequence | None = None, pose: bool = False,
               aligned: bool = False, flip: bool | None = None) -> list[Face]: ...

    def placement(self, points: np.ndarray) -> tuple[Box, float]: ...


class VideoTracker:
    """Landmarks on a stream of frames with the detector run only now and then (see the module).

    ``every``: detector period in frames (1 = detect on every frame); ``smoothing``: ``True``
    (:class:`Smoothing` defaults), a :class:`Smoothing`, or ``False``/``None`` for raw points (ids
    are kept either way). After :meth:`run` (or :meth:`push`, one frame at a time), ``frames`` and ``detector_frames`` count the frames
    seen and those the detector ran on (a frame where a track was lost counts as a detector frame).
    """

    def __init__(self, landmarker: Landmarks, every: int = 10, smoothing: bool | Smoothing | None = True,
                 fps: float = 30.0, max_faces: int | None = None, pose: bool = False, aligned: bool = False,
                 flip: bool | None = None):
        if isinstance(every, bool) or int(every) != every or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every!r}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.landmarker, self.every, self.fps = landmarker, int(every), float(fps)
        self.max_faces, self.pose, self.aligned = max_faces, pose, aligned
        self.flip = None if flip is None else bool(flip)  # None: the landmarker's own flip test
        settings = Smoothing() if smoothing is True or not smoothing else smoothing
        self.tracker = FaceTracker(settings, smooth=bool(smoothing))
        self.frames = self.detector_frames = 0
        self._live: list[tuple[Face, Box, Box]] = []
        self._since = 0  # frames since the last detector frame

    def run(self, frames: Iterable) -> Iterator[list[Face]]:
        """Yields each frame's faces (smoothed when asked, each with its ``track_id``)."""
        for frame in frames:
            yield self.push(frame)

    def push(self, frame, t: float | None = None) -> list[Face]:
        """The faces of the next frame (what :meth:`run` yields for it): the step-wise form, for frames
        that arrive one at a time (a live camera over HTTP). ``t``: the frame's time in seconds for the
        smoothing filter (increasing); default ``frames / fps``."""
        lm = self.landmarker
        if t is None:
            t = self.frames / self.fps
        frame = load_image(frame)
        height, width = frame.shape[:2]
        live = self._live  # previous frame's raw faces, with their detector box and landmark box then
        faces = None
        if live and self._since < self.every - 1:
            # one crop per face: where the previous frame's points place it (box and roll,
            # facemark.placement), one pass (and its mirror where the flip test is on)
            given = [dict(zip(("box", "roll"), lm.placement(face.points)), score=face.score) for face, _, _ in live]
            # in `live`'s order: detect() returns faces by score, given boxes keep theirs, the sort is stable
            found = lm.detect(frame, boxes=given, pose=self.pose, aligned=self.aligned, flip=self.flip)
            if not any(track_lost(face, (width, height)) for face in found):
                faces = [replace(face, box=_follow_box(det_box, det_lbox, box_from_points(face.points)))
                         for face, (_, det_box, det_lbox) in zip(found, live)]
                self._live = [(face, det_box, det_lbox) for face, (_, det_box, det_lbox) in zip(faces, live)]
                self._since += 1
        if faces is None:  # first frame, every `every` frames, a lost track
            faces = lm.detect(frame, self.max_faces, pose=self.pose, aligned=self.aligned)
            self._live = [(face, face.box, box_from_points(face.points)) for face in faces]
            self._since, self.detector_frames = 0, self.detector_frames + 1
        self.frames += 1
        return self.tracker.update(faces, t)

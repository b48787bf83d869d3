"""Faces over time: follow faces from video frame to frame and smooth their points.

:class:`VideoTracker` (what :meth:`facemark.Landmarker.track` runs) runs the detector on the first
frame, then every ``every`` frames or when a track is lost; in between, each face is cut where its
points in the previous frame place it (box and roll, :func:`facemark.placement.from_points`),
held steady while the face is still (:class:`facemark.placement.SteadyPlacement`), as production
face trackers do: no detector, one crop per face and frame (``flip=True`` adds its mirror, the
flip test). On a detector frame a face the detector finds where a track is continues the track
(same crop rule, the detector's fresh box); only a new face or a missed one takes a full
:meth:`~facemark.Landmarker.detect`. :class:`FaceTracker` gives each face a stable ``track_id``
(greedy IoU matching of landmark boxes) and smooths its points with a One-Euro filter per point
(Casiez, Roussel and Vogel, CHI 2012, :class:`facemark.filters.OneEuroFilter`)::

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

from facemark.detectors.base import Detector
from facemark.face import Face
from facemark.filters import OneEuroFilter, check_filter_settings
from facemark.geometry import Box, box_from_points, iou
from facemark.images import load_image
from facemark.placement import Steadiness, SteadyPlacement


@dataclass(frozen=True)
class Smoothing:
    """Video smoothing settings.

    The filter sees points in units of the face's size (square root of its landmark-box area when
    the face was first seen), so one setting suits small and large faces: ``beta = 200`` raises the
    cutoff by 200 Hz for a point moving one face size per second (a 170 px face moving 6 px per
    frame at 30 fps: about 200 Hz, next to no smoothing), while at rest the cutoff stays near
    ``min_cutoff``. The defaults come from ``python -m bench.bench_video`` (bench/results/video.md):
    ``beta`` is the setting that matters, and 200 is the smallest swept value (30, 60, 100, 200,
    400) that keeps NME on moving clips within 5 % of per-frame detection's with one crop per face
    and frame; ``min_cutoff`` changes little between 0.1 and 1 Hz (the flicker, NME and lag of each
    setting: bench/results/video.md). A face continues
    a track when its landmark box overlaps the track's last one with IoU >= ``min_iou``; a track
    unmatched for more than ``max_missed`` frames is dropped (a face seen again later starts a fresh filter).
    """

    min_cutoff: float = 0.3
    beta: float = 200.0
    d_cutoff: float = 1.0
    min_iou: float = 0.3
    max_missed: int = 5

    def __post_init__(self):
        check_filter_settings(self)
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"Smoothing.min_iou must be in 0..1, got {self.min_iou!r}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int) or self.max_missed < 0:
            raise ValueError(f"Smoothing.max_missed must be a whole number >= 0, got {self.max_missed!r}")


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
SAME_FACE = 0.3  # on a detector frame, a detection continues a track whose box it overlaps this much (IoU)


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

    @property
    def detector(self) -> Detector: ...


class VideoTracker:
    """Landmarks on a stream of frames with the detector run only now and then (see the module).

    ``every``: detector period in frames (1 = detect on every frame); ``smoothing``: ``True``
    (:class:`Smoothing` defaults), a :class:`Smoothing`, or ``False``/``None`` for raw points (ids
    are kept either way). After :meth:`run` (or :meth:`push`, one frame at a time), ``frames`` and ``detector_frames`` count the frames
    seen and those the detector ran on (a frame where a track was lost counts as a detector frame).
    """

    def __init__(self, landmarker: Landmarks, every: int = 10, smoothing: bool | Smoothing | None = True,
                 fps: float = 30.0, max_faces: int | None = None, pose: bool = False, aligned: bool = False,
                 flip: bool | None = False, steady: bool | Steadiness = True):
        if isinstance(every, bool) or int(every) != every or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every!r}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.landmarker, self.every, self.fps = landmarker, int(every), float(fps)
        self.max_faces, self.pose, self.aligned = max_faces, pose, aligned
        # tracked frames: one crop per face (False), with its mirror (True), or the landmarker's own (None)
        self.flip = None if flip is None else bool(flip)
        if not isinstance(steady, (bool, Steadiness)):
            raise ValueError(f"steady must be True, False or a facemark.placement.Steadiness, got {steady!r}")
        # False: each crop exactly where the previous frame's points place it
        self.steadiness = Steadiness() if steady is True else (steady or None)
        settings = Smoothing() if smoothing is True or not smoothing else smoothing
        self.tracker = FaceTracker(settings, smooth=bool(smoothing))
        self.frames = self.detector_frames = 0
        # the previous frame's raw faces: each with its detector box and landmark box when last
        # detected (the box follows the points in between) and its crop's SteadyPlacement
        self._live: list[_Live] = []
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
        size = frame.shape[1], frame.shape[0]
        detector_frame = not self._live or self._since >= self.every - 1
        faces = None
        if self._live:  # faces in hand: followed from their points (the detector only checks, on its frames)
            faces = self._recheck(frame, size, t) if detector_frame else self._follow(frame, size, t)
        if faces is None:  # first frame, a lost track, a face the detector finds that no track holds
            faces = lm.detect(frame, self.max_faces, pose=self.pose, aligned=self.aligned)
            self._live = [_Live(face, face.box, box_from_points(face.points),
                                SteadyPlacement(self.steadiness) if self.steadiness else None) for face in faces]
            detector_frame = True
        self._since = 0 if detector_frame else self._since + 1
        self.detector_frames += detector_frame
        self.frames += 1
        return self.tracker.update(faces, t)

    def _follow(self, frame: np.ndarray, size: tuple[int, int], t: float,
                found: Sequence | None = None) -> list[Face] | None:
        """The live faces in ``frame`` (at ``t`` seconds), each cut once where its previous points place
        it (box and roll, :func:`facemark.placement.from_points`) through its
        :class:`~facemark.placement.SteadyPlacement`: one pass (and its mirror where the flip test is on).
        ``found``: the detector's fresh detection of each (a detector frame). None when a track is lost."""
        lm, live = self.landmarker, self._live
        placed = [lm.placement(f.face.points) if f.steady is None else f.steady(lm.placement(f.face.points), t)
                  for f in live]
        given = [{"box": box, "roll": roll, "score": f.face.score} for (box, roll), f in zip(placed, live)]
        # in `live`'s order: detect() returns faces by score, `live` is in score order (it keeps
        # detect()'s, re-sorted when the detector gives fresh scores), the sort is stable
        faces = lm.detect(frame, boxes=given, pose=self.pose, aligned=self.aligned, flip=self.flip)
        if any(track_lost(face, size) for face in faces):
            return None
        out = []
        for f, face, d in zip(live, faces, found or live):
            if found is None:  # the detector box follows the points
                face = replace(face, box=_follow_box(f.det_box, f.det_lbox, box_from_points(face.points)))
            else:  # the detector's fresh box and score
                face = replace(face, box=tuple(float(v) for v in d.box), score=float(d.score))
                f.det_box, f.det_lbox = face.box, box_from_points(face.points)
            f.face = face
            out.append(face)
        if found is not None:  # fresh scores: back in score order, as detect() gives faces
            order = sorted(range(len(out)), key=lambda i: -out[i].score)
            out, self._live = [out[i] for i in order], [live[i] for i in order]
        return out

    def _recheck(self, frame: np.ndarray, size: tuple[int, int], t: float) -> list[Face] | None:
        """A detector frame with faces in hand: the detector runs, and when each face it finds
        continues one live track (their boxes overlap, IoU >= :data:`SAME_FACE`) and each track is
        found, the faces are followed as in between (:meth:`_follow`, fresh boxes and scores), so the
        detector frame costs the detector and no second placement; None (a full :meth:`detect`) when
        it finds a new face or misses a tracked one."""
        found = self.landmarker.detector.detect(frame)[: self.max_faces]
        if len(found) != len(self._live):
            return None
        order = []
        for f in self._live:  # f.face.box: the detector box, followed to the face's last points
            best = max(range(len(found)), key=lambda k: iou(found[k].box, f.face.box))
            if best in order or iou(found[best].box, f.face.box) < SAME_FACE:
                return None
            order.append(best)
        return self._follow(frame, size, t, [found[k] for k in order])


@dataclass
class _Live:
    """A face :class:`VideoTracker` follows: its last raw points (``face``), its detector box and
    landmark box when last detected (the box follows the points in between), its crop's
    :class:`~facemark.placement.SteadyPlacement`."""

    face: Face
    det_box: Box
    det_lbox: Box
    steady: SteadyPlacement | None = None

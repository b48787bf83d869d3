"""``facemark predict``: landmarks for image files, folders and videos, drawn and saved as JSON.

:func:`predict_paths` takes files and folders (searched recursively for image and video files),
finds faces with a :class:`~facemark.api.Landmarker` (or uses boxes given per image), and writes

* each image, annotated, to ``out_dir`` under its own name (a folder's files keep their relative
  paths); each video as an annotated ``.mp4`` and a ``<name>.frames.json`` with its per-frame faces;
* with ``align``: 112 x 112 ArcFace-aligned crops to ``out_dir/aligned/`` (:mod:`facemark.align`);
* with ``pose``: yaw, pitch and roll per face (:mod:`facemark.pose`), in the JSON and on the image;
* one JSON (default ``out_dir/predictions.json``) with, per image, its path, size and faces
  (box, score, points), and the files that were skipped with the reason.

All files are written atomically (temporary file, then rename). A file that cannot be read or
processed is reported and listed under ``"skipped"``; it never stops the run.

Video landmarks are smoothed over time with a One-Euro filter per point (Casiez, Roussel and
Vogel, CHI 2012), faces being followed from frame to frame by the IoU of their boxes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from facemark.api import Face, Landmarker, load_image
from facemark.files import atomic_path, write_atomic
from facemark.detectors import iou
from facemark.detectors.given import GivenBoxes
from facemark.geometry import box_from_points
from facemark.plots import draw_box as _draw_box
from facemark.plots import draw_points, write_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
_WRITABLE = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # else written as .png
SAMPLE_IMAGE = Path(str(files("facemark") / "assets" / "astronaut.jpg"))  # NASA, public domain


# --------------------------------------------------------------------------- temporal smoothing


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
        """Smoothed copies of ``faces`` (frame at time ``t`` seconds), each with ``extras["track"]``."""
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
            out.append(Face(face.box, face.score, points.astype(np.float32), {**face.extras, "track": track["id"]}))
        return out


# --------------------------------------------------------------------------- inputs


def collect_inputs(
    paths: Iterable[str | Path], exclude: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """``([(input file, output path relative to out_dir), ...], skipped)`` for files and folders.

    Folders are searched recursively for image and video files (other files are ignored, and so is
    anything under ``exclude``, the output folder); a named file is used whatever its suffix.
    """
    jobs, skipped, taken = [], [], set()
    exclude = exclude.resolve() if exclude else None

    def add(path: Path, rel: Path) -> None:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            rel = rel.with_suffix(".mp4")
        elif rel.suffix.lower() not in _WRITABLE:
            rel = rel.with_suffix(".png")
        candidate, n = rel, 1
        while candidate.as_posix().lower() in taken:  # two inputs with one name: keep both
            candidate, n = rel.with_name(f"{rel.stem}-{n}{rel.suffix}"), n + 1
        taken.add(candidate.as_posix().lower())
        jobs.append((path, candidate))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
                and not (exclude and p.resolve().is_relative_to(exclude))
            )
            for p in found:
                add(p, p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        else:
            skipped.append({"path": str(path), "reason": "no such file or folder"})
    return jobs, skipped


# --------------------------------------------------------------------------- one image / frame


class _Predictor:
    """Faces of one image (detected, or from given boxes) and their drawing / extras."""

    def __init__(self, landmarker: Landmarker, boxes: GivenBoxes | None, max_faces: int | None,
                 draw_box: bool, draw_indices: bool, align: bool, pose: bool):
        self.lm, self.boxes, self.max_faces = landmarker, boxes, max_faces
        self.draw_box, self.draw_indices, self.align, self.pose = draw_box, draw_indices, align, pose

    def faces(self, image: np.ndarray, key: Path) -> list[Face]:
        if self.boxes is None:
            return self.lm.detect(image, self.max_faces)
        found = self.boxes.detect(key=key)[: self.max_faces]  # KeyError (reported) if none given
        points = self.lm.predict_batch([image], [[self.boxes.landmark_box(d.box) for d in found]])[0]
        return [Face(d.box, d.score, p) for d, p in zip(found, points)]

    def extras(self, image: np.ndarray, faces: list[Face], aligned_stem: Path | None) -> None:
        """Head pose and aligned crops, stored in each face's ``extras`` (as JSON-ready values)."""
        height, width = image.shape[:2]
        for i, face in enumerate(faces):
            if self.pose:
                from facemark.pose import head_pose

                try:
                    yaw, pitch, roll = head_pose(face.points, (width, height))
                    face.extras["pose"] = {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2)}
                except ValueError as err:  # e.g. a point scheme without a chin point
                    face.extras["pose"] = {"error": str(err)}
            if self.align and aligned_stem is not None:
                from facemark.align import align_face

                path = aligned_stem.with_name(f"{aligned_stem.name}_face{i}.png")
                write_image(path, align_face(image, face.points))
                face.extras["aligned"] = str(path)

    def draw(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        radius = max(1.5, max(image.shape[:2]) / 400)  # visible on large photos, not blotchy on small
        out = image
        for face in faces:
            if self.draw_box:
                out = _draw_box(out, face.box, thickness=max(1, round(radius / 2)))
            out = draw_points(out, face.points, radius=radius, indices=self.draw_indices)
            pose = face.extras.get("pose", {})
            if "yaw" in pose:
                text = f"yaw {pose['yaw']:.0f} pitch {pose['pitch']:.0f} roll {pose['roll']:.0f}"
                org = (int(face.box[0]), max(12, int(face.box[1]) - 4))
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, radius / 4, (0, 255, 255), 1, cv2.LINE_AA)
        return out


def _face_dict(face: Face) -> dict:
    out = face.to_dict()
    out.update({k: v for k, v in face.extras.items() if isinstance(v, (int, float, str, dict))})
    return out


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1)
    # one line per innermost list of numbers (a point, a box, a size), not one line per number
    text = re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (text + "\n").encode())


def _reason(err: BaseException) -> str:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return message if isinstance(err, (ValueError, KeyError, OSError)) else f"{type(err).__name__}: {message}"


# --------------------------------------------------------------------------- video


def _predict_video(path: Path, out: Path, predictor: _Predictor, smooth: Smoothing | None, aligned_stem: Path | None,
                   progress: bool) -> dict:
    from tqdm import tqdm

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: not a readable video")
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 25.0  # some containers report no rate
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"{path}: no video frame could be decoded")
        height, width = frame.shape[:2]
        tracker = FaceTracker(smooth) if smooth else None
        frames = []
        # the temporary file keeps the .mp4 suffix: VideoWriter picks the container by it
        with atomic_path(out) as tmp, tqdm(total=total, desc=path.name, unit="frame", leave=False,
                                           disable=not progress) as bar:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an mp4v video to {tmp}")
            try:
                index = 0
                while ok:
                    faces = predictor.faces(frame, path)
                    if tracker is not None:
                        faces = tracker.update(faces, index / fps)
                    stem = aligned_stem.with_name(f"{aligned_stem.name}_frame{index:06d}") if aligned_stem else None
                    predictor.extras(frame, faces, stem)
                    writer.write(predictor.draw(frame, faces))
                    frames.append({"frame": index, "time": round(index / fps, 4),
                                   "faces": [_face_dict(f) for f in faces]})
                    bar.update()
                    ok, frame = capture.read()
                    index += 1
            finally:
                writer.release()
    finally:
        capture.release()
    frames_json = out.with_name(f"{out.stem}.frames.json")
    settings = asdict(smooth) if smooth else None
    _write_json(frames_json, {"path": str(path), "size": [width, height], "fps": fps, "smoothing": settings,
                              "frames": frames})
    return {"path": str(path), "output": str(out), "frames_json": str(frames_json), "size": [width, height],
            "fps": fps, "frames": len(frames)}


# --------------------------------------------------------------------------- entry point


def predict_paths(
    paths: Iterable[str | Path],
    landmarker: Landmarker,
    out_dir: str | Path = "facemark-out",
    json_path: str | Path | None = None,
    boxes: str | Path | GivenBoxes | Mapping | Sequence | None = None,
    draw_box: bool = False,
    draw_indices: bool = False,
    align: bool = False,
    pose: bool = False,
    smooth: bool | Smoothing = True,
    max_faces: int | None = None,
    progress: bool = True,
) -> dict:
    """Predict, draw and save landmarks for ``paths`` (image files, folders, videos); see the module.

    ``boxes``: a boxes JSON file (``{image file name: [[x0, y0, x1, y1], ...]}``, tight
    landmark-style boxes; format in :mod:`facemark.detectors.given`), a loaded mapping/list or a
    :class:`GivenBoxes`: the model runs on those boxes (:meth:`Landmarker.predict_batch`) instead of
    detecting. ``smooth``: One-Euro smoothing of video points (``True`` = :class:`Smoothing` defaults).
    Returns what is written to the JSON file (``out_dir/predictions.json`` by default).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    json_path = Path(json_path) if json_path else out_dir / "predictions.json"
    if boxes is not None and not isinstance(boxes, GivenBoxes):
        boxes = GivenBoxes.from_json(boxes) if isinstance(boxes, (str, Path)) else GivenBoxes(boxes)
    smoothing = (Smoothing() if smooth is True else smooth) or None
    predictor = _Predictor(landmarker, boxes, max_faces, draw_box, draw_indices, align, pose)
    # build the detector now, so a missing optional dependency stops the run before any file
    detector = "given boxes" if boxes is not None else landmarker.detector.name
    jobs, skipped = collect_inputs(paths, exclude=out_dir)
    for item in skipped:
        tqdm.write(f"skipped {item['path']}: {item['reason']}")
    images, videos = [], []
    for path, rel in tqdm(jobs, desc="predict", unit="file", disable=not progress):
        out = out_dir / rel
        aligned_stem = (out_dir / "aligned" / rel).with_suffix("") if align else None
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(_predict_video(path, out, predictor, smoothing, aligned_stem, progress))
                continue
            image = load_image(path)
            faces = predictor.faces(image, path)
            predictor.extras(image, faces, aligned_stem)
            write_image(out, predictor.draw(image, faces))
            height, width = image.shape[:2]
            images.append({"path": str(path), "output": str(out), "size": [width, height],
                           "faces": [_face_dict(f) for f in faces]})
        except Exception as err:  # one bad file must not end a long run: report it and go on
            skipped.append({"path": str(path), "reason": _reason(err)})
            tqdm.write(f"skipped {path}: {skipped[-1]['reason']}")
    result = {"model": landmarker.name, "backend": landmarker.backend, "detector": detector,
              "images": images, "videos": videos, "skipped": skipped}
    _write_json(json_path, result)
    return result

"""``facemark predict``: landmarks for image files, folders and videos, drawn and saved as JSON.

:func:`predict_paths` takes files and folders (searched recursively for image and video files),
finds faces with a :class:`~facemark.api.Landmarker` (or uses boxes given per image), and writes

* each image, annotated, to ``out_dir`` under its own name (a folder's files keep their relative
  paths); each video as an annotated ``.mp4`` and a ``<name>.frames.jsonl`` (JSON Lines: a first line
  with the video's path, the model, size, fps and settings, then one line per frame with its faces), streamed
  to ``<name>.frames.jsonl.partial`` as frames are processed and renamed when the video ends, so a
  long video's results never sit in memory and a run that dies keeps the frames done;
* with ``align``: 112 x 112 ArcFace-aligned crops to ``out_dir/aligned/`` (:mod:`facemark.align`), each
  face's file under ``"aligned_file"`` in the JSON (:meth:`Face.to_dict`);
* with ``pose``: yaw, pitch and roll per face (:mod:`facemark.pose`), in the JSON and on the image
  (a face without one has ``"pose": null`` and a ``"pose_reason"``, said once on stderr);
* one JSON (default ``out_dir/predictions.json``) with the model (its name and ``"model_sha256"``,
  :func:`facemark.runtime.model_digest`), per image its path, size and faces (box, score, points),
  and the files that were skipped with the reason.

Each drawing carries a legend in its lower left corner: what the dots, the red rings (points
scored below :data:`facemark.plots.LOW_SCORE`) and, when drawn, the lines and boxes are.

All files are written atomically (temporary file, then rename). An output never replaces an input:
a run whose outputs would land on its inputs (``predict photo.jpg --out .``) is refused before any
work, as are an ``--out`` that is a file and a run with nothing to process. A file that cannot be
read or processed (a truncated image, one over the pixel cap, a box far outside it, a result that
is not finite) is reported on stderr and listed under ``"skipped"``; it never stops the run, and
the command line exits non-zero for it unless ``--skip-bad`` is given.

This module is file input and output only: the faces (points, pose, aligned chips) come from
:meth:`Landmarker.detect` (images) and :meth:`Landmarker.track` (videos: the detector every few
frames, ids and smoothing, :mod:`facemark.track`), their JSON from :meth:`Face.to_dict`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facemark.api import Face, Landmarker, check_max_faces
from facemark.detectors.given import GivenBoxes
from facemark.files import atomic_path, fsync_directory, write_atomic
from facemark.geometry import box_from_points, check_box
from facemark.images import IMAGE_SUFFIXES, check_pixels, load_image
from facemark.inputs import input_files
from facemark.plots import LOW_COLOR, LOW_SCORE, draw_label, draw_legend, draw_points, text_scale, write_image
from facemark.plots import draw_box as _draw_box
from facemark.plots import draw_lines as _draw_lines
from facemark.runtime import model_digest
from facemark.track import FaceTracker, Smoothing

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
_WRITABLE = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # else written as .png
SAMPLE_IMAGE = Path(str(files("facemark") / "assets" / "astronaut.jpg"))  # NASA, public domain
#: the colours of the drawings (BGR), named once so that each picture's legend says what they are
POINT_COLOR, LINE_COLOR, BOX_COLOR, POSE_COLOR = (0, 255, 0), (255, 255, 0), (255, 0, 0), (0, 255, 255)


# --------------------------------------------------------------------------- inputs


def collect_inputs(
    paths: Iterable[str | Path], exclude: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """``([(input file, output path relative to out_dir), ...], skipped)`` for files and folders.

    Folders are searched recursively for image and video files (:func:`input_files`; other files
    are ignored, and so is the output folder ``exclude`` when it lies inside one); a named file is
    used whatever its suffix.
    """
    found, skipped = input_files(paths, IMAGE_SUFFIXES + tuple(VIDEO_SUFFIXES), exclude)
    jobs, taken = [], set()
    for path, rel in found:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            rel = rel.with_suffix(".mp4")
        elif rel.suffix.lower() not in _WRITABLE:
            rel = rel.with_suffix(".png")
        candidate, n = rel, 1
        while candidate.as_posix().lower() in taken:  # two inputs with one name: keep both
            candidate, n = rel.with_name(f"{rel.stem}-{n}{rel.suffix}"), n + 1
        taken.add(candidate.as_posix().lower())
        jobs.append((path, candidate))
    return jobs, skipped


def frames_path(out: Path) -> Path:
    """Where the per-frame JSON Lines of the annotated video ``out`` go."""
    return out.with_name(f"{out.stem}.frames.jsonl")


def check_outputs(jobs: list[tuple[Path, Path]], out_dir: Path, json_path: Path) -> None:
    """Refuse, before any work, an ``out_dir`` that is a file, a ``json_path`` that is a folder, and
    outputs that would be written over one of the inputs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --out names a file; give a folder for the annotated files")
    if json_path.is_dir():
        raise ValueError(f"{json_path}: --json names a folder; give a file name")
    inputs = {path.resolve(): path for path, _ in jobs}
    planned = [(out_dir / rel, path) for path, rel in jobs]
    planned += [(frames_path(out_dir / rel), path) for path, rel in jobs if path.suffix.lower() in VIDEO_SUFFIXES]
    planned.append((json_path, None))
    for output, _ in planned:
        if output.resolve() in inputs:
            raise ValueError(f"{output} would be written over the input {inputs[output.resolve()]}: facemark never "
                             "writes over an input; give --out a folder that holds none of them")


def _json_line(data: dict) -> str:
    """One line of strict JSON; ValueError when a value is NaN or infinite (not JSON)."""
    try:
        return json.dumps(data, allow_nan=False)
    except ValueError:
        raise ValueError("a result holds NaN or infinity, which JSON cannot carry") from None


# --------------------------------------------------------------------------- one image / frame


class _Predictor:
    """Faces of one image or frame from the :class:`Landmarker` (detected, or on given boxes), and
    how they are drawn and written: the faces themselves come whole from :meth:`Landmarker.detect`."""

    def __init__(self, landmarker: Landmarker, boxes: GivenBoxes | None, max_faces: int | None,
                 draw_box: bool, draw_indices: bool, align: bool, pose: bool, draw_lines: bool = False,
                 inputs: frozenset[Path] = frozenset(), legend: bool = True):
        self.lm, self.boxes, self.max_faces = landmarker, boxes, max_faces
        self.draw_box, self.draw_indices, self.align, self.pose = draw_box, draw_indices, align, pose
        self.draw_lines = draw_lines
        self.legend = self.legend_entries() if legend else []
        self.inputs = inputs  # resolved input paths: never written over
        self.pose_reasons: set[str] = set()  # why faces had no pose, each said once on stderr

    def faces(self, image: np.ndarray, key: Path) -> list[Face]:
        given = None
        if self.boxes is not None:  # KeyError (reported) if none are given for this file
            given = [{"box": d.landmark_box, "roll": d.roll, "score": d.score} for d in self.boxes.detect(key=key)]
            for face in given:  # a 1e9-pixel box: one line, not an OpenCV error when its points are drawn
                check_box(face["box"], (image.shape[1], image.shape[0]))
        return self.lm.detect(image, self.max_faces, boxes=given, pose=self.pose, aligned=self.align)

    def face_dicts(self, faces: list[Face], aligned_stem: Path | None) -> list[dict]:
        """:meth:`Face.to_dict` of each face; aligned chips are written beside, their paths in the dict
        (``"aligned_file"``, where the API and the service give the chip itself, ``"aligned_png_base64"``).
        Why a face has no pose is said on stderr the first time (the JSON has it for every face)."""
        out = []
        for i, face in enumerate(faces):
            path = None
            if face.aligned is not None and aligned_stem is not None:
                path = aligned_stem.with_name(f"{aligned_stem.name}_face{i}.png")
                if path.resolve() in self.inputs:
                    raise ValueError(f"{path} would be written over an input")
                write_image(path, face.aligned)
            if face.pose_reason is not None and face.pose_reason not in self.pose_reasons:
                self.pose_reasons.add(face.pose_reason)
                tqdm.write(f"facemark: no head pose: {face.pose_reason}", file=sys.stderr)
            out.append(face.to_dict(aligned_file=path))
        return out

    def draw(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        largest = max(1.5, max(image.shape[:2]) / 400)  # visible on large photos, not blotchy on small
        out = image
        for face in faces:
            x0, y0, x1, y1 = box_from_points(face.points)
            # marker size follows the face: a 30 x 40 px face gets sub-pixel dots, not one green blob
            radius = max(0.5, min(largest, math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0)) / 40))
            if self.draw_box:
                out = _draw_box(out, face.box, BOX_COLOR, thickness=max(1, round(radius / 2)))
            if self.draw_lines:
                out = _draw_lines(out, face.points, self.lm.scheme.groups, self.lm.scheme.closed, LINE_COLOR,
                                  thickness=max(1, round(radius / 2)))
            out = draw_points(out, face.points, POINT_COLOR, radius=radius, indices=self.draw_indices,
                              scores=face.point_scores)
            if face.pose is not None:
                text = "pose (deg): yaw {:.0f} pitch {:.0f} roll {:.0f}".format(*face.pose)
                org = (int(face.box[0]), max(12, int(face.box[1]) - 4))
                out = draw_label(out, text, org, max(radius / 4, text_scale(out)), POSE_COLOR)
        return draw_legend(out, self.legend) if self.legend else out

    def legend_entries(self) -> list[tuple[str, tuple[int, int, int], str]]:
        """The key to what :meth:`draw` draws (:func:`facemark.plots.draw_legend`), in every picture and
        video frame alike: the points, the low-score rings when the model scores its points, and the
        box and lines when they are drawn (the pose label names itself)."""
        scored = self.lm.quality_calibration is not None
        entries = [("dot", POINT_COLOR, f"landmark (point score >= {LOW_SCORE:g})" if scored else "landmark")]
        if scored:
            entries.append(("ring", LOW_COLOR, f"unsure landmark (point score < {LOW_SCORE:g})"))
        if self.draw_lines:
            entries.append(("line", LINE_COLOR, "face outline (scheme lines)"))
        if self.draw_box:
            entries.append(("box", BOX_COLOR, "face box"))
        return entries


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1, allow_nan=False)  # every entry was checked (_json_line): strict JSON
    # one line per innermost list of numbers (a point, a box, a size), not one line per number
    text = re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (text + "\n").encode())


def _reason(err: BaseException) -> str:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return message if isinstance(err, (ValueError, KeyError, OSError)) else f"{type(err).__name__}: {message}"


# --------------------------------------------------------------------------- video


def _predict_video(path: Path, out: Path, predictor: _Predictor, smooth: Smoothing | None, every: int,
                   aligned_stem: Path | None, progress: bool) -> dict:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: not a readable video")
    frames_jsonl = frames_path(out)
    partial = frames_jsonl.with_name(frames_jsonl.name + ".partial")
    try:
        cap = predictor.lm.max_pixels  # the Landmarker's image cap (facemark --max-mpx)
        check_pixels(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), path, cap)
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 25.0  # some containers report no rate
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"{path}: no video frame could be decoded")
        height, width = frame.shape[:2]
        check_pixels(width, height, path, cap)

        def read():  # the frames, the first one already read; `frame` stays the last one yielded
            nonlocal ok, frame
            while ok:
                yield frame
                ok, frame = capture.read()

        if predictor.boxes is None:  # the detector now and then, crops from the points in between
            found = predictor.lm.track(read(), every, smoothing=smooth or False, fps=fps,
                                       max_faces=predictor.max_faces, pose=predictor.pose, aligned=predictor.align)
        else:  # given boxes: the model on them in every frame, ids and smoothing from the FaceTracker
            tracker = FaceTracker(smooth or Smoothing(), smooth=bool(smooth))
            found = (tracker.update(predictor.faces(image, path), index / fps) for index, image in enumerate(read()))
        count = faces_seen = 0
        settings = asdict(smooth) if smooth else None
        partial.parent.mkdir(parents=True, exist_ok=True)
        # the per-frame results stream to disk as JSON Lines (never all in memory; a run that dies keeps
        # the frames done in the .partial file); the temporary video keeps the .mp4 suffix: VideoWriter
        # picks the container by it
        with open(partial, "w", encoding="utf-8") as lines, atomic_path(out) as tmp, \
                tqdm(total=total, desc=path.name, unit="frame", leave=False, disable=not progress) as bar:
            lines.write(_json_line({"path": str(path), "model": predictor.lm.name,
                                    "model_sha256": model_digest(predictor.lm.model_path),
                                    "size": [width, height], "fps": fps, "smoothing": settings,
                                    "detector_every": every if predictor.boxes is None else None}) + "\n")
            lines.flush()
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an mp4v video to {tmp}")
            try:
                for index, faces in enumerate(found):  # `frame` is still the frame these faces are on
                    stem = aligned_stem.with_name(f"{aligned_stem.name}_frame{index:06d}") if aligned_stem else None
                    writer.write(predictor.draw(frame, faces))
                    lines.write(_json_line({"frame": index, "time": round(index / fps, 4),
                                            "faces": predictor.face_dicts(faces, stem)}) + "\n")
                    lines.flush()
                    count, faces_seen = count + 1, faces_seen + len(faces)
                    bar.update()
            finally:
                writer.release()
            lines.flush()
            os.fsync(lines.fileno())
        os.replace(partial, frames_jsonl)
        fsync_directory(frames_jsonl.parent)
    finally:
        capture.release()
    return {"path": str(path), "output": str(out), "frames_jsonl": str(frames_jsonl), "size": [width, height],
            "fps": fps, "frames": count, "faces": faces_seen}


# --------------------------------------------------------------------------- entry point


def predict_paths(
    paths: Iterable[str | Path],
    landmarker: Landmarker,
    out_dir: str | Path = "facemark-out",
    json_path: str | Path | None = None,
    boxes: str | Path | GivenBoxes | Mapping | Sequence | None = None,
    draw_box: bool = False,
    draw_indices: bool = False,
    draw_lines: bool = False,
    align: bool = False,
    pose: bool = False,
    smooth: bool | Smoothing = True,
    every: int = 10,
    max_faces: int | None = None,
    progress: bool = True,
    legend: bool = True,
) -> dict:
    """Predict, draw and save landmarks for ``paths`` (image files, folders, videos); see the module.

    ``boxes``: a boxes JSON file (``{image file name: [[x0, y0, x1, y1], ...]}``, tight
    landmark-style boxes; format in :mod:`facemark.detectors.given`), a loaded mapping/list or a
    :class:`GivenBoxes`: the model runs on those boxes (:meth:`Landmarker.detect` with ``boxes=``) instead of
    detecting. ``smooth``: One-Euro smoothing of video points (``True`` = :class:`Smoothing` defaults);
    ``every``: on video, the detector runs every ``every`` frames (:meth:`Landmarker.track`).
    ``legend``: a key to the drawing's marks in a corner of every annotated image and frame.
    Returns what is written to the JSON file (``out_dir/predictions.json`` by default).
    """
    max_faces = check_max_faces(max_faces)
    out_dir = Path(out_dir)
    json_path = Path(json_path) if json_path else out_dir / "predictions.json"
    if boxes is not None and not isinstance(boxes, GivenBoxes):
        boxes = GivenBoxes.from_json(boxes) if isinstance(boxes, (str, Path)) else GivenBoxes(boxes)
    smoothing = (Smoothing() if smooth is True else smooth) or None
    paths = [Path(p) for p in paths]
    jobs, skipped = collect_inputs(paths, exclude=out_dir)
    if not jobs and not skipped:
        raise ValueError(f"no image or video files in {', '.join(map(str, paths)) or 'the inputs'}: nothing to do")
    check_outputs(jobs, out_dir, json_path)
    predictor = _Predictor(landmarker, boxes, max_faces, draw_box, draw_indices, align, pose, draw_lines,
                           inputs=frozenset(path.resolve() for path, _ in jobs), legend=legend)
    # build the detector now, so a missing optional dependency stops the run before any file
    detector = "given boxes" if boxes is not None else landmarker.detector.name
    for item in skipped:
        tqdm.write(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    images, videos = [], []
    for path, rel in tqdm(jobs, desc="predict", unit="file", disable=not progress):
        out = out_dir / rel
        aligned_stem = (out_dir / "aligned" / rel).with_suffix("") if align else None
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(_predict_video(path, out, predictor, smoothing, every, aligned_stem, progress))
                continue
            image = load_image(path, landmarker.max_pixels, landmarker.max_bytes)  # the Landmarker's caps
            faces = predictor.faces(image, path)
            height, width = image.shape[:2]
            entry = {"path": str(path), "output": str(out), "size": [width, height],
                     "faces": predictor.face_dicts(faces, aligned_stem)}
            _json_line(entry)  # strict JSON, before the drawing is written
            write_image(out, predictor.draw(image, faces))
            images.append(entry)
        except Exception as err:  # one bad file must not end a long run: report it and go on
            skipped.append({"path": str(path), "reason": _reason(err)})
            tqdm.write(f"skipped {path}: {skipped[-1]['reason']}", file=sys.stderr)
    result = {"model": landmarker.name, "model_sha256": model_digest(landmarker.model_path),
              "backend": landmarker.backend, "detector": detector,
              "images": images, "videos": videos, "skipped": skipped}
    _write_json(json_path, result)
    return result

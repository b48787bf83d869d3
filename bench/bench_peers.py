"""What a user compares: facemark, dlib and MediaPipe FaceMesh, in one process, in one run.

Pipelines, each given each photo once, taking turns photo by photo (the order rotating), decoding
excluded, ``cv2.setNumThreads(1)``; each returns every face's points in pixels:

* facemark: ``Landmarker(model).detect(image)`` with its defaults (``--model``; ``--also
  LABEL=MODEL``, repeatable, adds another model's row);
* dlib: its HOG frontal detector (no upsampling) + the 68-point shape predictor of
  face-recognition-models (:class:`bench.bench_end_to_end.DlibPipeline`'s ``detect``); skipped, with a note,
  when dlib is not installed;
* MediaPipe FaceMesh (``mp.solutions.face_mesh``, ``static_image_mode=True``, ``max_num_faces=4``,
  ``refine_landmarks=True``: 478 points, the iris centres among them; the model ships inside the
  ``mediapipe==0.10.21`` wheel); skipped, with a note, when ``mediapipe`` is not importable. It
  needs ``numpy==1.26.4``, ``opencv-*<4.12``, ``jax<0.5``, ``jaxlib<0.5``: run it from a venv of
  its own (docs/evaluation.md, "Against dlib and MediaPipe", gives the commands).

Accuracy, on faces none of them trained on: the CUHK AFLW test list
(:func:`bench.bench_hard_faces.aflw_test`: 2995 faces, 80 x 80 crops scaled x3). Each tool's points
become the five labelled ones (image-left eye centre, image-right eye centre, nose tip, image-left
and image-right mouth corners; scheme "5"): 68 points by :func:`facemark.schemes.to_five` (eye
centres = means of 36-41 / 42-47, nose tip 30, mouth corners 48, 54); FaceMesh's by
:data:`FACEMESH_FIVE` (iris centres 468, the subject's right = image left, and 473; nose tip 4;
mouth corners 61, 291). A face is found when the box of a pipeline's five points overlaps the true
five points' box with IoU >= :data:`facemark.evaluate.MATCH_IOU`; NME is normalised by the true
eye-centre distance, over the faces each pipeline found and over the faces every pipeline found;
FR@10: NME > 10 %. The list's labels sit about a pixel off (docs/evaluation.md, "The AFLW test
labels sit a pixel off"), which every tool meets alike; the second table reads them as 1-based
(``aflw_test(..., one_based=True)``), from the same predictions.

Speed, per photo: the 300w-lite validation photos as they are and the same photos as 640 x 480
(:func:`bench.bench_end_to_end.photo_640x480`); the **mean** over photos and its ratio to dlib's
mean (to the first row's when dlib is absent)::

    /root/mp-venv/bin/python -m bench.bench_peers [--model default] [--also LABEL=MODEL]
        [--speed-images 391] [--aflw-limit N] [--no-accuracy] [--cache runs/hard-faces]

(``python -m bench.bench_peers`` in the main environment gives the rows of what it has.) Writes
``bench/results/peers.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench import machine, write_report
from bench.bench_end_to_end import DlibPipeline, photo_640x480, time_per_photo
from bench.bench_hard_faces import aflw_test
from facemark import __version__ as facemark_version
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.data.store import read_dataset_image
from facemark.evaluate import MATCH_IOU
from facemark.geometry import best_match, box_from_points
from facemark.metrics import nme
from facemark.schemes import get_scheme, to_five

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "peers.md"
#: FaceMesh's points (refine_landmarks=True) that are the five cuhk-5pt points, in scheme "5"'s order:
#: iris centres (468: the subject's right eye, image left; 473: the left), nose tip (4: the tip's
#: lowest-error match to the 68-point scheme's point 30 on 300w-lite; 1 sits lower, on the tip's
#: underside), mouth corners (61: the subject's right, image left; 291)
FACEMESH_FIVE = (468, 473, 4, 61, 291)
#: FaceMesh's max_num_faces: a few, as facemark and dlib return every face they find
FACEMESH_MAX_FACES = 4
#: FaceMesh's row label
FACEMESH = "MediaPipe FaceMesh (refine_landmarks)"
#: FaceMesh's candidates for the 68-point scheme's nose tip (point 30), checked on 300w-lite by :func:`nose_check`
NOSE_CANDIDATES = (1, 4)


@dataclass
class Peer:
    """One pipeline: ``detect(image_bgr)`` -> every face's points ``(K, 2)`` in pixels (what is timed),
    ``five(points)`` -> the five cuhk-5pt points ``(5, 2)``."""

    detect: Callable[[np.ndarray], list[np.ndarray]]
    five: Callable[[np.ndarray], np.ndarray] = to_five


class DlibPeer(DlibPipeline):
    """:class:`~bench.bench_end_to_end.DlibPipeline` (HOG, no upsampling, + the 68-point predictor), its
    model file found without :mod:`facemark.baselines`, which imports torch (the MediaPipe venv has none)."""

    def __init__(self):
        import dlib  # optional: the dlib extra

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the 68-point model needs the face-recognition-models package")
        self._dlib, self.upsample = dlib, 0
        self._hog = dlib.get_frontal_face_detector()
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        self._predictor = dlib.shape_predictor(str(path))


class FaceMeshPipeline:
    """MediaPipe FaceMesh with the iris refinement, on still photos (its detector on every call)."""

    def __init__(self, max_faces: int = FACEMESH_MAX_FACES):
        import mediapipe as mp  # optional: not a facemark dependency (it pins numpy 1.26 and OpenCV < 4.12)

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                                     refine_landmarks=True)

    def detect(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        h, w = image_bgr.shape[:2]
        result = self._mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        # normalised coordinates have 0 and 1 at the image's edges: pixel centres are 0.5 in
        return [np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in face.landmark])
                for face in result.multi_face_landmarks or []]

    @staticmethod
    def five(points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float32)[list(FACEMESH_FIVE)]


def peers(model: str, also: dict[str, str]) -> tuple[dict[str, Peer], list[str]]:
    """The pipelines by label (facemark's first, dlib's last) and a note for each one skipped."""
    out, notes = {}, []

    def facemark_peer(name):
        landmarker = Landmarker(name)
        return Peer(lambda image: [face.points for face in landmarker.detect(image)])

    out[f"facemark `Landmarker({model!r}).detect`"] = facemark_peer(model)
    for label, name in also.items():
        out[f"facemark, {label} (`{name}`)"] = facemark_peer(name)
    try:
        mesh = FaceMeshPipeline()
        out[FACEMESH] = Peer(mesh.detect, mesh.five)
    except ImportError as error:
        notes.append(f"MediaPipe FaceMesh skipped: {error} (`pip install mediapipe==0.10.21` in a venv of its own)")
    try:
        dlib_pipeline = DlibPeer()
        out["dlib HOG + 68-point shape predictor"] = Peer(lambda image: [f.points for f in dlib_pipeline.detect(image)])
    except ImportError as error:
        notes.append(f"dlib skipped: {error} (`pip install \"facemark[dlib]\"`)")
    return out, notes


def aflw_predictions(pipelines: dict[str, Peer], faces) -> dict[str, list[list[np.ndarray]]]:
    """Every face's five points that each pipeline finds in each AFLW crop, the pipelines taking
    turns photo by photo (the order rotating)."""
    labels = list(pipelines)
    found = {label: [] for label in labels}
    for k, face in enumerate(faces):
        image = read_dataset_image(face.image_path)
        for label in labels[k % len(labels):] + labels[: k % len(labels)]:
            found[label].append([pipelines[label].five(points) for points in pipelines[label].detect(image)])
    return found


def accuracy_table(found: dict[str, list[list[np.ndarray]]], faces) -> list[str]:
    """Markdown rows of faces found, NME and FR@10 over each pipeline's found faces and over the faces
    every pipeline found."""
    scheme = get_scheme(5)
    truths = [np.asarray(f.points, np.float64) for f in faces]
    errors = {}  # label -> per-face NME, NaN where not found
    for label, per_face in found.items():
        out = np.full(len(faces), np.nan)
        for i, (candidates, truth) in enumerate(zip(per_face, truths)):
            j, overlap = best_match([box_from_points(c) for c in candidates], box_from_points(truth))
            if j is not None and overlap >= MATCH_IOU:
                out[i] = nme(candidates[j], truth, "inter_ocular", scheme)[0]
        errors[label] = out
    every = np.all([np.isfinite(e) for e in errors.values()], axis=0)
    rows = [f"| pipeline | faces found | NME % | FR@10 % | NME %, the {every.sum()} faces all found | FR@10 % |",
            "|---|---:|---:|---:|---:|---:|"]
    def stats(x: np.ndarray) -> str:  # NME and FR@10 cells
        return f"{x.mean() * 100:.2f} | {(x > 0.10).mean() * 100:.1f}" if x.size else "- | -"

    for label, e in errors.items():
        own = e[np.isfinite(e)]
        rows.append(f"| {label} | {own.size}/{len(e)} ({own.size / len(e) * 100:.1f} %) | {stats(own)} | "
                    f"{stats(e[every])} |")
    return rows


def nose_check(detect, faces, images) -> list[str]:
    """Markdown rows: how far each of FaceMesh's :data:`NOSE_CANDIDATES` lies from the 68-point nose tip
    (point 30) of 300w-lite faces, in % of the inter-ocular distance (outer eye corners); and how often
    468 / 61 lie image-left of 473 / 291 (the subject's right eye and mouth corner)."""
    offsets, sides = {k: [] for k in NOSE_CANDIDATES}, []
    for face, image in zip(faces, images):
        truth = np.asarray(face.points, np.float64)
        found = detect(image)
        i, _ = best_match([box_from_points(points) for points in found], box_from_points(truth))
        if i is None:
            continue
        points, iod = found[i], np.linalg.norm(truth[36] - truth[45])
        for k in NOSE_CANDIDATES:
            offsets[k].append((points[k] - truth[30]) / iod * 100)
        sides.append((points[468, 0] < points[473, 0], points[61, 0] < points[291, 0]))
    rows = [f"| FaceMesh point | distance to point 30, % iod ({len(sides)} faces) | mean offset x, y % |",
            "|---|---:|---:|"]
    for k, v in offsets.items():
        v = np.array(v)
        rows.append(f"| {k} | {np.linalg.norm(v, axis=1).mean():.1f} | {v[:, 0].mean():+.1f}, {v[:, 1].mean():+.1f} |")
    left = np.mean(sides, axis=0) * 100
    return rows + ["", f"468 image-left of 473 on {left[0]:.0f} % of the faces, 61 image-left of 291 on {left[1]:.0f} %."]


def versions() -> str:
    """The installed versions that the figures depend on."""
    names = ["onnxruntime", "numpy", "opencv-python-headless", "opencv-python", "opencv-contrib-python",
             "dlib-bin", "dlib", "face-recognition-models", "mediapipe"]
    found = [f"facemark {facemark_version}"]
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found) + f"; cv2 {cv2.__version__} imported; Python {platform.python_version()}"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="facemark's model: a shipped name, a .pt or an .onnx file")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL",
                    help="another facemark model's row, scored and timed beside the others (repeatable)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--speed-images", type=int, default=391, help="validation photos timed (each also as 640x480)")
    ap.add_argument("--aflw-limit", type=int, default=None, help="only the first N faces of the AFLW test list")
    ap.add_argument("--no-accuracy", action="store_true", help="timing pass only")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "hard-faces",
                    help="where the scaled AFLW crops are written once (as bench.bench_hard_faces)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    also = {}
    for item in args.also:
        label, _, name = item.partition("=")
        if not label or not name:
            ap.error(f"--also {item!r}: expected LABEL=MODEL")
        also[label] = name

    pipelines, notes = peers(args.model, also)
    command = shlex.join([sys.executable, "-m", "bench.bench_peers", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# facemark, dlib and MediaPipe FaceMesh", "", f"`{command}`", "", f"Versions: {versions()}.", "",
             f"Machine: {machine()}; load average (1/5/15 min) at the start {load()}.", "",
             *(f"- {note}" for note in notes), *([""] if notes else [])]
    print(lines[4], file=sys.stderr)

    if not args.no_accuracy:
        for one_based in (False, True):
            faces = aflw_test(args.cache, one_based=one_based)[: args.aflw_limit]
            if not one_based:
                found = aflw_predictions(pipelines, faces)
                lines += [f"## Accuracy: {len(faces)} faces of the CUHK AFLW test list (none trained on them)", "",
                          "80 x 80 crops scaled x3; each tool's points as the five labelled ones; a face is found "
                          f"at IoU >= {MATCH_IOU} of the five points' boxes; NME normalised by the true eye-centre "
                          f"distance. Load average after the pass: {load()}.", "",
                          "### Labels as listed", ""]
            else:
                lines += ["### Labels read as 1-based (3 px less in x and y: the list's known offset)", ""]
            lines += [*accuracy_table(found, faces), ""]

    faces = load_faces(args.data / "val")[0][: args.speed_images]
    originals = [read_dataset_image(f.image_path) for f in faces]
    shapes = {f"{len(originals)} 300w-lite validation photos as they are "
              f"(~{np.mean([max(p.shape[:2]) for p in originals]):.0f} px)": originals,
              f"the same {len(originals)} photos as 640x480": [photo_640x480(p) for p in originals]}
    if FACEMESH in pipelines:
        lines += ["## FaceMesh's points on the 300w-lite validation photos", "",
                  f"Which point is the 68-point scheme's nose tip; the five used: {FACEMESH_FIVE}.", "",
                  *nose_check(pipelines[FACEMESH].detect, faces, originals), ""]
    labels = list(pipelines)
    base = labels[-1] if labels[-1].startswith("dlib") else labels[0]
    rows = {label: [f"| {label}"] for label in labels}
    header = ["| pipeline"]
    for name, photos in shapes.items():
        times, found_any = time_per_photo({label: p.detect for label, p in pipelines.items()}, photos)
        header.append(f" {name}: mean ms | × {base.split(' ')[0]} | photos with a face")
        for label in labels:
            t = np.mean(times[label])
            rows[label].append(f" {t:.1f} | {t / np.mean(times[base]):.2f} | {found_any[label]}/{len(photos)}")
    lines += ["## Speed: per photo", "",
              "Each photo given once to each pipeline, the pipelines taking turns photo by photo; decoding excluded; "
              f"cv2.setNumThreads(1), ONNX Runtime and MediaPipe with their default threads. Load average after the "
              f"pass: {load()}.", "",
              " |".join(header) + " |", "|---" + "|---:|---:|---:" * len(shapes) + "|",
              *(" |".join(cells) + " |" for cells in rows.values()), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

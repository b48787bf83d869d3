"""Five points: the shipped five-point option against the 68-point default's points converted to five.

Both run end to end (``Landmarker(model).detect`` on the whole photo, their own detector), taking
turns photo by photo in one process, on

* the 300w-lite validation split as it is,
* the degraded copy of it (faces of 20-30 px between the outer eye corners, blur, JPEG 40-70;
  :func:`bench.bench_hard_faces.degraded_split`), and
* the CUHK AFLW test list (2995 faces with larger poses, five labelled points; 80 x 80 crops scaled
  x3, :func:`bench.bench_hard_faces.aflw_test`), which no shipped model trained on (the shipped
  68-point default trained on the whole 300w-lite folder, validation split included).

Each model's points become the five cuhk-5pt points (:func:`facemark.schemes.to_five`: eye centres =
means of 36-41 / 42-47, nose tip 30, mouth corners 48, 54; a five-point model's are its own), as do
the annotations. A face counts as found when the box of a detected face's five points reaches IoU
>= :data:`facemark.evaluate.MATCH_IOU` with the box of the true five. NME: mean distance of the
five points, normalised by the true eye-centre distance, over found faces (and over the faces
every model found). Extra ``--model`` rows (a file or a shipped name) sit beside ``default`` and
``default-5``, e.g. the separate five-point model shipped before Step 18::

    python -m bench.bench_five_points [--model runs/old/default-5.onnx] [--limit N]

Writes ``bench/results/five_points.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from bench import write_report
from bench.bench_hard_faces import aflw_test, degraded_split
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.evaluate import MATCH_IOU
from facemark.geometry import best_match, box_from_points
from facemark.images import read_image
from facemark.schemes import to_five

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "five_points.md"


def five_error(faces, truth: np.ndarray) -> float | None:
    """Eye-centre NME of the detected face that is the annotated one (None: not found)."""
    true5 = to_five(truth)
    if not faces:
        return None
    boxes = [box_from_points(to_five(face.points)) for face in faces]
    i, overlap = best_match(boxes, box_from_points(true5))
    if i is None or overlap < MATCH_IOU:
        return None
    points = to_five(faces[i].points)
    return float(np.linalg.norm(points - true5, axis=1).mean() / np.linalg.norm(true5[0] - true5[1]))


def run(models: dict[str, Landmarker], faces) -> dict[str, list[float | None]]:
    """Each model's error per face, the models taking turns photo by photo."""
    errors = {name: [] for name in models}
    for n, face in enumerate(faces):
        image = read_image(face.image_path)
        for name, lm in models.items():
            errors[name].append(five_error(lm.detect(image), np.asarray(face.points, np.float64)))
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{len(faces)} faces", file=sys.stderr)
    return errors


def table(title: str, errors: dict[str, list[float | None]], reference: str) -> list[str]:
    common = [i for i in range(len(errors[reference])) if all(e[i] is not None for e in errors.values())]
    ref = np.mean([e for e in errors[reference] if e is not None])
    lines = [f"### {title}", "", "| model | found | NME % (found) | NME % (found by all) | x the 68-point default's five |",
             "|---|---:|---:|---:|---:|"]
    for name, values in errors.items():
        found = [e for e in values if e is not None]
        mean = float(np.mean(found))
        lines.append(f"| {name} | {len(found)}/{len(values)} | {100 * mean:.2f} | "
                     f"{100 * np.mean([values[i] for i in common]):.2f} | {mean / ref:.3f} |")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="another model's row (a file or shipped name)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "hard-faces", help="where degraded photos are kept")
    ap.add_argument("--limit", type=int, default=None, help="first N validation faces only (a quick look)")
    ap.add_argument("--no-aflw", action="store_true", help="leave out the CUHK AFLW test list")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    faces = load_faces(args.data / "val")[0][: args.limit]
    names = ["default", "default-5", *args.model]
    models = {f"`{name}`" + (" (68 points -> 5)" if name == "default" else ""): Landmarker(name, num_threads=args.threads)
              for name in names}
    reference = next(iter(models))
    lines = ["# Five points: the five-point option against the 68-point default's five", "",
             f"`{shlex.join(['python', '-m', 'bench.bench_five_points', *(argv if argv is not None else sys.argv[1:])])}`",
             "", "End to end (each model's own detector, defaults), the models taking turns photo by photo. NME: "
             "mean of the five points' errors / the true eye-centre distance. Found: the five points' box overlaps "
             f"the true one with IoU >= {MATCH_IOU}.", ""]
    lines += table(f"300w-lite validation split ({len(faces)} faces)", run(models, faces), reference)
    degraded = degraded_split(faces, args.cache)
    lines += table(f"degraded validation split ({len(degraded)} faces, 20-30 px between the eyes)",
                   run(models, degraded), reference)
    if not args.no_aflw:
        aflw = aflw_test(args.cache)[: args.limit]
        lines += table(f"CUHK AFLW test list ({len(aflw)} faces, held out for every model)", run(models, aflw), reference)
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

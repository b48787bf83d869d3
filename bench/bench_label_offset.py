"""Where the CUHK five-point labels sit against models' points: a constant shift in the AFLW test list.

The CUHK AFLW rows of ``bench_hard_faces`` are far above every other set (8.4-8.7 % against about
3.4 % on 300-W), for every model, including ``default-5``, which trained on cuhk-5pt faces. This
script asks how much of that is a constant shift of the labels rather than a wrong face shape: for
each model (its own detector, the face matched to the labels as in ``bench_hard_faces``: the box of
the five points at IoU >= 0.5), the mean signed offset ``prediction - label`` of the five points in
the pixels of the 80 x 80 crops, with a 95 % interval, on two lists framed by different hands:

* the AFLW test list (``new_testing.txt``, 2995 faces, the hard-faces set);
* the first ``--train-faces`` faces of the training list (``new_training.txt``: LFW and web photos).

Then the eye-centre NME as scored, and with the offset removed — fitted on the even-numbered faces,
applied to the odd-numbered ones (so the figure is not fitted on the faces it scores), on the odd
half only. A model that never saw cuhk-5pt (the Step-7c default, ``runs/old/default.onnx``, or its
twin) is the fair witness; the others are listed for comparison::

    python -m bench.bench_label_offset --model runs/old/default.onnx --model default --model default-5

Writes ``bench/results/label_offset.md`` and, with ``--picture``, a few AFLW faces zoomed in with the labels
(green) and the first model's points (red).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np

from bench import write_report
from bench.bench_hard_faces import FivePoints, cuhk_list
from facemark.api import Landmarker
from facemark.evaluate import MATCH_IOU
from facemark.files import write_atomic
from facemark.geometry import best_match, box_from_points
from facemark.images import read_image
from facemark.metrics import nme
from facemark.schemes import get_scheme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "label_offset.md"
FACTOR = 3  # the crops are scored scaled x3, as in bench_hard_faces
PICKS = (5, 40, 60)  # the AFLW test faces of --picture


def five_points(landmarker: Landmarker):
    """The pipeline as five-point faces: a 68-point model seen through :class:`FivePoints`."""
    return FivePoints(landmarker) if landmarker.num_points == 68 else landmarker


def match(five, image: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The five predicted points ``(5, 2)`` of the face of ``five.detect(image)`` matching the labels
    ``gt`` (its five points' box at IoU >= :data:`facemark.evaluate.MATCH_IOU` with theirs, as
    ``evaluate`` matches five-point faces), or None when the pipeline missed it."""
    found = [np.asarray(f.points, np.float64) for f in five.detect(image)]
    i, overlap = best_match([box_from_points(p) for p in found], box_from_points(gt))
    return None if i is None or overlap < MATCH_IOU else found[i]


def matched_points(landmarker: Landmarker, faces) -> tuple[np.ndarray, np.ndarray]:
    """Five predicted and five true points ``(n, 5, 2)`` of the faces the pipeline found (:func:`match`),
    in the scaled photos' pixels."""
    five = five_points(landmarker)
    pred, true = [], []
    for face in faces:
        gt = np.asarray(face.points, np.float64)
        points = match(five, read_image(face.image_path), gt)
        if points is not None:
            pred.append(points)
            true.append(gt)
    return np.array(pred).reshape(-1, 5, 2), np.array(true).reshape(-1, 5, 2)


def eye_nme(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per face: mean point error over the eye-centre distance (the five-point scheme's NME)."""
    return nme(pred, true, "inter_ocular", get_scheme(5))


def offset_row(label: str, set_name: str, pred: np.ndarray, true: np.ndarray, attempted: int) -> str:
    shift = (pred - true).mean(1) / FACTOR  # (n, 2) each face's mean offset, crop pixels
    mean, half = shift.mean(0), 1.96 * shift.std(0, ddof=1) / np.sqrt(len(shift))
    error = eye_nme(pred, true)
    even, odd = slice(0, None, 2), slice(1, None, 2)
    fitted = (pred[even] - true[even]).mean((0, 1))  # one (x, y) shift, fitted on the even faces
    odd_as_is, odd_shifted = eye_nme(pred[odd], true[odd]), eye_nme(pred[odd] - fitted, true[odd])
    return (f"| {label} | {set_name} | {len(pred)}/{attempted} | {mean[0]:+.2f} ± {half[0]:.2f} | "
            f"{mean[1]:+.2f} ± {half[1]:.2f} | {error.mean() * 100:.2f} | {(error > 0.1).mean() * 100:.1f} | "
            f"{odd_as_is.mean() * 100:.2f} → {odd_shifted.mean() * 100:.2f} | "
            f"{(odd_as_is > 0.1).mean() * 100:.1f} → {(odd_shifted > 0.1).mean() * 100:.1f} |")


def picture(landmarker: Landmarker, faces, path: Path, picks=PICKS, zoom: int = 3, side: int = 400) -> None:
    """``faces[picks]`` (scaled crops) zoomed ``zoom`` times around their points: labels as green
    crosses, the model's points (its own detector, as scored) as red ones."""
    five, tiles = five_points(landmarker), []
    for k in picks:
        face = faces[k]
        image, gt = read_image(face.image_path), np.asarray(face.points, np.float64)
        pred = match(five, image, gt)
        if pred is None:
            continue
        big = cv2.resize(image, (image.shape[1] * zoom, image.shape[0] * zoom), interpolation=cv2.INTER_CUBIC)
        for points, colour in ((gt, (0, 200, 0)), (pred, (0, 0, 255))):
            for x, y in (points + 0.5) * zoom:
                cv2.drawMarker(big, (int(x), int(y)), colour, cv2.MARKER_CROSS, 18, 2)
        x0, y0 = (np.minimum(gt.min(0), pred.min(0)) * zoom - 40).clip(0).astype(int)
        tile = np.zeros((side, side, 3), np.uint8)
        part = big[y0 : y0 + side, x0 : x0 + side]
        tile[: part.shape[0], : part.shape[1]] = part
        tiles.append(tile)
    write_atomic(path, cv2.imencode(".png", np.hstack(tiles))[1].tobytes())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="a model (repeatable)")
    ap.add_argument("--train-faces", type=int, default=1500, help="faces of the training list measured")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "hard-faces")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--picture", type=Path, default=None, help="PNG of a few AFLW faces, labels and points")
    args = ap.parse_args(argv)
    if args.train_faces < 2:
        ap.error("--train-faces must be at least 2")
    cv2.setNumThreads(2)
    sets = {"AFLW test list": cuhk_list(args.cache, "new_testing.txt", FACTOR),
            f"training list, first {args.train_faces}": cuhk_list(args.cache, "new_training.txt", FACTOR,
                                                                   args.train_faces)}
    command = shlex.join(["python", "-m", "bench.bench_label_offset", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Label offset: cuhk-5pt five points against models' points", "", f"`{command}`", "",
             "Offset: mean of prediction - label over the five points and the found faces, in pixels of the "
             "80 x 80 crops (x right, y down), ± its 95 % interval. NME: eye-centre distance, own detector "
             "(the default pipeline), found faces. Last two columns: the odd-numbered faces as scored → with "
             "one (x, y) shift removed that was fitted on the even-numbered faces (a diagnostic, not a score).",
             "", "| model | list | found | offset x px | offset y px | NME % | FR@10 % | odd half NME % | "
             "odd half FR@10 % |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    landmarkers = {model: Landmarker(model) for model in args.model}
    for model, landmarker in landmarkers.items():
        for set_name, faces in sets.items():
            pred, true = matched_points(landmarker, faces)
            lines.append(offset_row(model, set_name, pred, true, len(faces)))
            print(lines[-1], flush=True)
    if args.picture is not None:
        picture(landmarkers[args.model[0]], sets["AFLW test list"], args.picture)
        shown = args.picture.relative_to(ROOT) if args.picture.is_absolute() and args.picture.is_relative_to(ROOT) \
            else args.picture
        lines += ["", f"Picture: `{shown}` "
                  f"(AFLW test faces {', '.join(map(str, PICKS))}; labels green, `{args.model[0]}` red, its own detector as scored)."]
    write_report(args.out, lines)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

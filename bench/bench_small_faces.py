"""Small faces in group photos: recall by face size for every detector and for the default pipeline.

The validation photos of the fixed 300w-lite split are scaled so that each annotated face's
inter-ocular distance (outer eye corners 36, 45) is one of ``--iods`` pixels, then tiled side by
side (a grid, one size per canvas) into 1280 x 960 canvases on a grey ground: a collage
standing in for a group photo. ``--faces`` photos per size, spread evenly over the split.

A face counts as found when a detection's landmark box (the detector's calibration, or its
keypoint placement where it has one) grown to a face box by the crop recipe reaches IoU >= 0.5
with the true face box (as in ``bench.bench_detectors``); for the default pipeline
(``Landmarker().detect``) the box of its predicted points is used instead of the calibrated one. Other faces
in the photos (unannotated people) may be found too and are not counted either way. Times are
the mean wall time per canvas (2 threads, decoding excluded)::

    python -m bench.bench_small_faces [--iods 12,16,20,24,30,40,60,80] [--faces 120] [--only blazeface,mtcnn]

Writes ``bench/results/small_faces.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from bench import DEFAULT_ROOT, write_report
from facemark.api import Landmarker
from facemark.calibrate import evenly_spaced, face_box
from facemark.data.faces import load_faces
from facemark.detectors import DEFAULT_DETECTOR, detector_available, get_detector
from facemark.geometry import best_match, box_from_points
from facemark.images import read_image

RESULTS = Path(__file__).resolve().parent / "results" / "small_faces.md"
CANVAS = (1280, 960)
RECALL_IOU = 0.5

#: label -> (registered detector, constructor arguments)
SETTINGS: dict[str, tuple[str, dict]] = {
    "`blazeface` (the default: short range, tiles for photos of 960 px and more, MTCNN where it finds nothing)":
        ("blazeface", {}),
    "`blazeface`, short range, tiles, no fallback": ("blazeface", {"fallback": None}),
    "`blazeface`, short range, no tiles, no fallback": ("blazeface", {"tiles": False, "fallback": None}),
    "`blazeface`, full range, no tiles, no fallback": ("blazeface", {"model": "full", "tiles": False, "fallback": None}),
    "`blazeface`, full range, tiles, no fallback": ("blazeface", {"model": "full", "tiles": True, "fallback": None}),
    "`mtcnn` (max side 640)": ("mtcnn", {}),
    "`mtcnn`, max side none": ("mtcnn", {"max_side": None}),
    "`dlib-hog`, upsample 0": ("dlib-hog", {"upsample": 0}),
    "`dlib-hog`, upsample 1": ("dlib-hog", {"upsample": 1}),
}


def canvases(faces, iod: float, seed: int = 0) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """The faces' photos scaled to inter-ocular ``iod`` px and tiled into 1280 x 960 canvases:
    ``[(canvas, [true (68, 2) points in canvas pixels, ...]), ...]``."""
    scaled = []
    for face in faces:
        image = read_image(face.image_path)
        points = np.asarray(face.points, np.float64)
        f = iod / np.linalg.norm(points[36] - points[45])
        size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        scaled.append((small, (points + 0.5) * (np.array(size) / image.shape[1::-1]) - 0.5))
    out, canvas, truth, x, y, row = [], None, [], 0, 0, 0
    for small, points in scaled:
        h, w = small.shape[:2]
        if canvas is not None and x + w > CANVAS[0]:
            x, y, row = 0, y + row, 0
        if canvas is None or y + h > CANVAS[1]:
            if canvas is not None:
                out.append((canvas, truth))
            canvas, truth, x, y, row = np.full((CANVAS[1], CANVAS[0], 3), 127, np.uint8), [], 0, 0, 0
        w, h = min(w, CANVAS[0] - x), min(h, CANVAS[1] - y)
        canvas[y : y + h, x : x + w] = small[:h, :w]
        truth.append(points + (x, y))
        x, row = x + w, max(row, h)
    if canvas is not None:
        out.append((canvas, truth))
    return out


def found_faces(boxes: list, truth: list[np.ndarray]) -> int:
    """How many true faces a landmark box in ``boxes`` matches (face boxes at IoU >= 0.5, each box once)."""
    left = [face_box(b) for b in boxes]
    hits = 0
    for points in truth:
        i, value = best_match(left, face_box(box_from_points(points)))
        if i is not None and value >= RECALL_IOU:
            hits += 1
            left[i] = (0.0, 0.0, 0.0, 0.0)
    return hits


def recall_by_size(sets: dict, iods: list[float], find) -> tuple[list[float], float]:
    """The share of true faces found at each size (``find(canvas)`` -> landmark boxes) and the mean ms per canvas."""
    recall, ms = [], []
    for iod in iods:
        hits = total = 0
        for canvas, truth in sets[iod]:
            start = time.perf_counter()
            boxes = find(canvas)
            ms.append(1000 * (time.perf_counter() - start))
            hits += found_faces(boxes, truth)
            total += len(truth)
        recall.append(hits / total)
    return recall, float(np.mean(ms))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--iods", default="12,16,20,24,30,40,60,80", help="inter-ocular distances in pixels")
    ap.add_argument("--faces", type=int, default=120, help="photos per size")
    ap.add_argument("--only", default="", help="comma-separated detector names to run (default: all available)")
    ap.add_argument("--model", default="default", help="the landmark model of the pipeline row")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(2)
    iods = [float(v) for v in args.iods.split(",")]
    faces = evenly_spaced(load_faces(args.root, "val")[0], args.faces)
    sets = {iod: canvases(faces, iod) for iod in iods}
    only = {v for v in args.only.split(",") if v}
    rows = []
    for label, (name, kwargs) in SETTINGS.items():
        if (only and name not in only) or not detector_available(name):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector = get_detector(name, **kwargs, **({"threads": 2} if name in ("mtcnn", "blazeface") else {}))
        recall, ms = recall_by_size(sets, iods, lambda canvas: [d.landmark_box for d in detector.detect(canvas)])
        rows.append((label, recall, ms))
        print(label, " ".join(f"{r * 100:.0f}" for r in recall), f"{ms:.0f} ms", file=sys.stderr)
    if not only or DEFAULT_DETECTOR in only:
        landmarker = Landmarker(args.model)
        recall, ms = recall_by_size(sets, iods, lambda canvas: [box_from_points(f.points) for f in landmarker.detect(canvas)])
        rows.append((f"default pipeline `Landmarker().detect` ({DEFAULT_DETECTOR} + landmarks)", recall, ms))
    command = shlex.join(["python", "-m", "bench.bench_small_faces", *(argv if argv is not None else sys.argv[1:])])
    counts = ", ".join(f"{sum(len(t) for _, t in sets[i])} faces on {len(sets[i])} canvases at {i:g} px" for i in iods)
    lines = ["# Small faces: recall by inter-ocular distance", "", f"`{command}`", "",
             f"Validation photos of 300w-lite scaled so that the annotated face's inter-ocular distance (outer eye "
             f"corners) is the given size, tiled into 1280 x 960 canvases ({counts}). Found: a detection's landmark box "
             "(calibrated, or placed from its keypoints), grown to a face box by the crop recipe, reaches IoU >= 0.5 "
             "with the true face box; for the pipeline, the box of its predicted points. Time: mean per canvas, "
             "2 threads.", "",
             "| detector | " + " | ".join(f"{i:g} px" for i in iods) + " | ≥ 20 px | ms / canvas |",
             "|---|" + "---:|" * (len(iods) + 2)]
    for label, recall, ms in rows:
        big = [r for r, i in zip(recall, iods) if i >= 20]
        lines.append(f"| {label} | " + " | ".join(f"{r * 100:.1f}" for r in recall)
                     + f" | {np.mean(big) * 100:.1f} | {ms:.0f} |")
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

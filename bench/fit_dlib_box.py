"""Fit the landmark box -> dlib rectangle mapping of DlibPredictor on the TRAINING split.

dlib's 68-point shape predictor was trained on boxes of dlib's HOG face detector; the evaluation
hands out tight landmark boxes. On every training face of 300w-lite the HOG detection that
overlaps the true landmark box most (IoU >= 0.3) is matched, and the constants of
``cx' = cx + a*w, cy' = cy + b*h, w' = c*w, h' = d*h`` (landmark box -> dlib rectangle) are the
medians of the per-face ratios. Writes ``facemark/assets/dlib_box.json``; the validation split
is never looked at.

    python bench/fit_dlib_box.py [--root DATA] [--limit N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facemark.files import write_atomic
from facemark.detectors import IDENTITY, get_detector
from facemark.detectors.calibrate import (
    best_match, detections_of, evenly_spaced, fit_calibration, load_split, mean_calibrated_iou, run_detections,
)
from facemark.evaluate import DLIB_BOX_FILE
from facemark.geometry import box_from_points

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w-lite"
MIN_IOU = 0.3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--limit", type=int, default=None, help="fit on at most N training faces, spread evenly")
    ap.add_argument("--cache", type=Path, default=None, help="folder to cache raw detections in")
    ap.add_argument("--out", type=Path, default=DLIB_BOX_FILE)
    args = ap.parse_args(argv)

    samples = evenly_spaced(load_split(args.root, "train"), args.limit)
    print(f"training split: {len(samples)} faces from {args.root}", file=sys.stderr)
    # the detector's own box, unscaled: upsample 0 as dlib's examples, no downscaling (images ~400 px)
    detector = get_detector("dlib-hog", upsample=0, max_side=None)
    cache = None if args.cache is None else args.cache / "train_dlib-hog_raw.json"
    runs = run_detections(detector, samples, cache, progress="dlib-hog")
    landmark_boxes, dlib_boxes = [], []
    for sample in samples:
        truth = box_from_points(sample.points)
        found = detections_of(runs[sample.sample_id])
        i, overlap = best_match(found, truth)
        if i is not None and overlap >= MIN_IOU:
            landmark_boxes.append(truth)
            dlib_boxes.append(found[i].box)
    if len(dlib_boxes) < 20:
        print(f"only {len(dlib_boxes)} matched faces; not fitted", file=sys.stderr)
        return 1
    fit = fit_calibration(landmark_boxes, dlib_boxes)  # "detector box" = landmark box, target = dlib box
    fitted = mean_calibrated_iou(fit, landmark_boxes, dlib_boxes)
    raw = mean_calibrated_iou(IDENTITY, landmark_boxes, dlib_boxes)
    entry = {
        **{k: round(v, 5) for k, v in fit.to_dict().items()},
        "formula": "cx' = cx + a*w, cy' = cy + b*h, w' = c*w, h' = d*h: (cx, cy, w, h) of the tight 68-point "
                   "landmark box, primes of the dlib HOG detector rectangle (0-based pixel centres)",
        "about": "Fitted by bench/fit_dlib_box.py on the training split of 300w-lite (split_samples): medians over "
                 f"dlib-hog detections matched to the landmark box at IoU >= {MIN_IOU}.",
        "matched": len(dlib_boxes),
        "faces": len(samples),
        "mean_iou_train": round(fitted, 4),
        "mean_iou_raw_train": round(raw, 4),
    }
    write_atomic(args.out, json.dumps(entry, indent=2) + "\n")
    print(f"a={fit.a:+.4f} b={fit.b:+.4f} c={fit.c:.4f} d={fit.d:.4f}; matched {len(dlib_boxes)}/{len(samples)}; "
          f"mean IoU with the dlib box: mapped landmark box {fitted:.3f}, landmark box as is {raw:.3f}")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

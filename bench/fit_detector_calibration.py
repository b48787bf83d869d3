"""Fit each face detector's landmark-box calibration on the TRAINING split; write calibration.json.

For every training face the detection that overlaps the true landmark box most (IoU >= 0.3) is
matched; the constants of ``lcx = cx + a*w, lcy = cy + b*h, lw = c*w, lh = d*h`` are the medians
of the per-face ratios (robust to the odd loose match). Prints the constants and the residual:
the mean IoU of the calibrated box vs the true landmark box over the matched training faces
(raw = the detector box used unchanged). Detectors that give keypoints (BlazeFace) also get a
keypoint placement (:func:`facemark.calibrate.fit_placement`: the landmark box of the face turned
upright, from its keypoints), with its mean IoU likewise. The validation split is never looked at here.

    python -m bench.fit_detector_calibration [--root DATA] [--detectors haar:default,dlib-hog]
        [--limit N] [--threads 1] [--cache DIR]

Entries of detectors not run are kept in the file. ``--limit`` fits on N training faces spread
evenly over the split (dlib's CNN detector takes seconds per image on a small CPU).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from bench import DEFAULT_ROOT
from facemark.calibrate import (
    cache_file,
    detections_of,
    evenly_spaced,
    fit_calibration,
    fit_placement,
    mean_calibrated_iou,
    placement_iou,
    run_detections,
    write_calibrations,
)
from facemark.data.faces import load_faces
from facemark.detectors import CALIBRATION_FILE, IDENTITY, detector_available, get_detector
from facemark.geometry import best_match, box_from_points

#: calibration key -> (registered detector, constructor arguments). Settings that change only
#: what is found, not how boxes are drawn (upsampling, thresholds), share one calibration.
VARIANTS: dict[str, tuple[str, dict]] = {
    "haar:default": ("haar", {"cascade": "default"}),
    "haar:alt2": ("haar", {"cascade": "alt2"}),
    "dlib-hog": ("dlib-hog", {}),
    "dlib-cnn": ("dlib-cnn", {}),
    "mtcnn": ("mtcnn", {}),
    "blazeface": ("blazeface", {"fallback": None}),  # BlazeFace's own boxes, not its MTCNN fallback's
    "blazeface:full": ("blazeface", {"model": "full", "fallback": None}),
}

MIN_IOU = 0.3


def build(name: str, kwargs: dict, threads: int):
    import cv2

    cv2.setNumThreads(threads)
    extra = {"threads": threads} if name in ("mtcnn", "blazeface") else {}
    return get_detector(name, **kwargs, **extra)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--detectors", default="", help=f"comma-separated keys of {list(VARIANTS)} (default: available)")
    ap.add_argument("--limit", type=int, default=None, help="fit on at most N training faces, spread evenly")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None, help="folder to cache raw detections in")
    ap.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = ap.parse_args(argv)

    keys = [k for k in args.detectors.split(",") if k] or [k for k, (n, _) in VARIANTS.items() if detector_available(n)]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        ap.error(f"unknown detector keys {unknown}; choose from {list(VARIANTS)}")
    samples = evenly_spaced(load_faces(args.root, "train")[0], args.limit)
    print(f"training split: {len(samples)} faces from {args.root}", file=sys.stderr)

    entries, rows = {}, []
    for key in keys:
        name, kwargs = VARIANTS[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no calibration yet" is expected here
            detector = build(name, kwargs, args.threads)
        runs = run_detections(detector, samples, cache_file(args.cache, "train", key, kwargs), progress=key)
        det_boxes, lm_boxes, matched, matched_points = [], [], [], []
        for sample in samples:
            truth = box_from_points(sample.points)
            found = detections_of(runs[sample.sample_id])
            i, value = best_match([d.box for d in found], truth)
            if i is not None and value >= MIN_IOU:
                det_boxes.append(found[i].box)
                lm_boxes.append(truth)
                matched.append(found[i])
                matched_points.append(sample.points)
        if len(det_boxes) < 20:
            print(f"{key}: only {len(det_boxes)} matched faces, not fitted", file=sys.stderr)
            continue
        cal = fit_calibration(det_boxes, lm_boxes)
        residual = mean_calibrated_iou(cal, det_boxes, lm_boxes)
        raw = mean_calibrated_iou(IDENTITY, det_boxes, lm_boxes)
        entries[key] = {
            **{k: round(v, 5) for k, v in cal.to_dict().items()},
            "matched": len(det_boxes),
            "faces": len(samples),
            "mean_iou_train": round(residual, 4),
            "mean_iou_raw_train": round(raw, 4),
            "settings": kwargs,
        }
        if all(d.keypoints is not None for d in matched):
            placement = fit_placement(matched, matched_points)
            entries[key]["placement"] = [list(row) for row in placement.weights]
            entries[key]["placement_mean_iou_train"] = round(placement_iou(placement, matched, matched_points), 4)
            print(f"{key}: keypoint placement, mean IoU with the upright landmark box "
                  f"{entries[key]['placement_mean_iou_train']:.3f}", file=sys.stderr)
        rows.append((key, cal, len(det_boxes), len(samples), residual, raw))
        print(f"{key}: a={cal.a:+.4f} b={cal.b:+.4f} c={cal.c:.4f} d={cal.d:.4f}  matched {len(det_boxes)}/"
              f"{len(samples)}  mean IoU calibrated {residual:.3f} (raw box {raw:.3f})", file=sys.stderr)

    if not entries:
        print("nothing fitted", file=sys.stderr)
        return 1
    write_calibrations(
        entries, args.out,
        note="Fitted by facemark.calibrate.fit_calibration (python -m bench.fit_detector_calibration) on the "
             "training split of 300w-lite "
             "(facemark.data.prepare.split_samples); medians of matched detections (IoU >= 0.3 with the landmark box); "
             "'placement': facemark.calibrate.fit_placement on the keypoints of the same matches.",
    )
    print("| detector | a | b | c | d | matched / faces | mean IoU calibrated | mean IoU raw box |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, cal, matched, faces, residual, raw in rows:
        print(f"| {key} | {cal.a:+.4f} | {cal.b:+.4f} | {cal.c:.4f} | {cal.d:.4f} | {matched} / {faces} | "
              f"{residual:.3f} | {raw:.3f} |")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

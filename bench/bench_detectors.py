"""Benchmark the face detectors on the fixed VALIDATION split; write bench/results/detectors.md.

For each detector setting, over the validation faces of ``split_samples`` (one annotated face
per image):

* recall: the annotated face counts as found when a detection reaches IoU >= 0.5 with its
  *face box*, the landmark box grown by the crop recipe
  (``crop_box_from_box(landmark_box, None, CropRule(clip=False))``). "raw" compares the
  detector's own box; "calibrated" compares the face box grown the same way from the
  detector's calibrated landmark box (what the landmark pipeline uses);
* false positives per image: detections other than the one matched (calibrated) to the
  annotated face. The images are crops around one annotated face and may hold parts of other,
  real, unannotated faces, so some of these are true faces;
* top-1: how often the highest-scoring detection is the annotated face (calibrated IoU >= 0.5);
* ms per image: median wall time of ``detect`` (image decoding excluded), 2 threads, from a
  separate timing pass over ``--timing`` images in which the detectors take turns image by
  image (so background load on a shared machine hits them alike);
* mean IoU of the calibrated landmark box vs the true landmark box, over the found faces.

The calibrations come from ``facemark/detectors/calibration.json`` (fitted on the training
split by ``python -m bench.fit_detector_calibration``).

    python -m bench.bench_detectors [--root DATA] [--only KEY,...] [--limit N] [--timing N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from bench import DEFAULT_ROOT, machine, write_report
from facemark.calibrate import cache_file, detections_of, evenly_spaced, face_box, run_detections
from facemark.data.faces import load_faces
from facemark.detectors import DEFAULT_DETECTOR, calibration_for, detector_available, get_detector
from facemark.geometry import best_match, box_from_points, iou
from facemark.images import read_image

RESULTS = Path(__file__).resolve().parent / "results" / "detectors.md"
THREADS = 2
RECALL_IOU = 0.5

#: key -> (label, registered detector, constructor arguments, calibration key)
SETTINGS: dict[str, tuple[str, str, dict, str]] = {
    "haar-default": ("`haar`, default cascade", "haar", {"cascade": "default"}, "haar:default"),
    "haar-alt2": ("`haar`, alt2 cascade", "haar", {"cascade": "alt2"}, "haar:alt2"),
    "hog-up0": ("`dlib-hog`, upsample 0", "dlib-hog", {"upsample": 0}, "dlib-hog"),
    "hog-up1": ("`dlib-hog`, upsample 1", "dlib-hog", {"upsample": 1}, "dlib-hog"),
    "cnn-up0": ("`dlib-cnn`, upsample 0", "dlib-cnn", {"upsample": 0}, "dlib-cnn"),
    "cnn-up0-256": ("`dlib-cnn`, upsample 0, max side 256", "dlib-cnn", {"upsample": 0, "max_side": 256}, "dlib-cnn"),
    "mtcnn": ("`mtcnn`", "mtcnn", {}, "mtcnn"),
    "blazeface": ("`blazeface` (short range; keypoint placement)", "blazeface", {}, "blazeface"),
    "blazeface-full": ("`blazeface`, full range, no fallback", "blazeface", {"model": "full", "fallback": None},
                       "blazeface:full"),
}


def evaluate(detector_boxes: dict[str, dict], samples, detector) -> dict:
    found, raw_found, top1, fps, ious, times = 0, 0, 0, [], [], []
    for sample in samples:
        entry = detector_boxes[sample.sample_id]
        truth = box_from_points(sample.points)
        truth_face = face_box(truth)
        dets = detections_of(entry)
        times.append(entry["ms"])
        _, raw_iou = best_match([d.box for d in dets], truth_face)
        raw_found += raw_iou >= RECALL_IOU
        landmark = [d.landmark_box for d in dets]  # calibrated box, or placed from keypoints
        i, cal_iou = best_match([face_box(b) for b in landmark], truth_face)
        hit = i is not None and cal_iou >= RECALL_IOU
        found += hit
        top1 += hit and i == 0  # detections are sorted by score
        fps.append(len(dets) - int(hit))
        if hit:
            ious.append(iou(landmark[i], truth))
    n = len(samples)
    return {
        "recall_raw": raw_found / n, "recall": found / n, "found": found, "top1": top1 / n,
        "fp": float(np.mean(fps)), "ms": float(np.median(times)), "ms_p90": float(np.percentile(times, 90)),
        "iou": float(np.mean(ious)) if ious else float("nan"), "n": n,
    }


def time_interleaved(detectors: dict, samples) -> dict[str, tuple[list[float], list[float]]]:
    """Per-image ``detect`` wall and CPU times (ms), the detectors taking turns on each image."""
    import time

    times = {key: ([], []) for key in detectors}
    keys = list(detectors)
    for n, sample in enumerate(samples):
        image = read_image(sample.image_path)
        for key in keys[n % len(keys):] + keys[:n % len(keys)]:
            wall, cpu = time.perf_counter(), time.process_time()
            detectors[key].detect(image)
            times[key][0].append((time.perf_counter() - wall) * 1000)
            times[key][1].append((time.process_time() - cpu) * 1000)
    return times


def table(results: dict[str, dict]) -> str:
    lines = [
        "| detector | recall, raw box | recall, calibrated | top-1 is the face | false pos. / image "
        "| ms / image (median) | ms / image (p90) | CPU ms / image (median) | mean IoU, calibrated vs landmark box |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        cpu = f"{r['cpu_ms']:.0f}" if "cpu_ms" in r else "-"
        lines.append(
            f"| {label} | {100 * r['recall_raw']:.1f} % | {100 * r['recall']:.1f} % ({r['found']}/{r['n']}) | "
            f"{100 * r['top1']:.1f} % | {r['fp']:.3f} | {r['ms']:.0f} | {r['ms_p90']:.0f} | {cpu} | {r['iou']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--only", default="", help=f"comma-separated keys of {list(SETTINGS)} (default: all available)")
    ap.add_argument("--limit", type=int, default=None, help="use at most N validation faces, spread evenly")
    ap.add_argument("--cache", type=Path, default=None, help="folder to cache raw detections in")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS.relative_to(RESULTS.parents[2])}; "
                    "a partial run, --only or --limit, is written only to an --out named here)")
    ap.add_argument("--timing", type=int, default=60, help="images of the interleaved timing pass (0: time the "
                    "accuracy runs instead)")
    ap.add_argument("--note", default="", help="a line about the machine and its load, added to the caption")
    args = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(THREADS)
    keys = [s for s in args.only.split(",") if s] or list(SETTINGS)
    unknown = [k for k in keys if k not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    samples = evenly_spaced(load_faces(args.root, "val")[0], args.limit)
    print(f"validation split: {len(samples)} faces from {args.root}", file=sys.stderr)
    results, skipped, detectors = {}, [], {}
    for setting in keys:
        label, name, kwargs, key = SETTINGS[setting]
        if not detector_available(name):
            skipped.append(f"{label} (not installed)")
            continue
        calibration = calibration_for(key)
        if calibration is None:
            skipped.append(f"{label} (no calibration for {key!r}: run python -m bench.fit_detector_calibration)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector = get_detector(name, **kwargs, **({"threads": THREADS} if name in ("mtcnn", "blazeface") else {}))
        detectors[label] = detector
        runs = run_detections(detector, samples, cache_file(args.cache, "val", setting, kwargs), progress=label)
        results[label] = evaluate(runs, samples, detector)
        r = results[label]
        print(f"{label}: recall {r['recall']:.3f} (raw {r['recall_raw']:.3f}) fp {r['fp']:.3f} "
              f"{r['ms']:.0f} ms iou {r['iou']:.3f}", file=sys.stderr)
    timing = ""
    if args.timing and detectors:
        timed = evenly_spaced(samples, args.timing)
        load_before = os.getloadavg()[0]
        print(f"timing pass: {len(timed)} images, detectors interleaved", file=sys.stderr)
        times = time_interleaved(detectors, timed)
        load_after = os.getloadavg()[0]
        for label, (wall, cpu) in times.items():
            results[label]["ms"], results[label]["ms_p90"] = float(np.median(wall)), float(np.percentile(wall, 90))
            results[label]["cpu_ms"] = float(np.median(cpu))
        timing = (f"Times come from a separate pass over {len(timed)} evenly spaced validation images in which the "
                  "detectors take turns image by image, so background load hits them alike; the machine's load "
                  f"average was {load_before:.1f} before and {load_after:.1f} after it ({os.cpu_count()} cores). "
                  "*CPU ms*: the process's CPU time per image (all its threads), which other processes on the "
                  "machine disturb far less than wall time.")

    caption = (
        f"Face detectors on the fixed validation split of 300w-lite ({len(samples)} faces, one annotated face "
        "per image; images are ~400x400 crops around that face). A face is *found* when a detection reaches "
        "IoU >= 0.5 with the annotated face box, defined as the landmark box grown by the crop recipe: "
        "`facemark.geometry.crop_box_from_box(landmark_box, None, CropRule(clip=False))`. *raw box*: the "
        "detector's own box is compared; *calibrated*: the same face box grown from the detector's calibrated "
        "landmark box (calibration fitted on the training split only). *False positives* are detections not "
        "matched to the annotated face; the images can contain other real (unannotated) faces, so some of them "
        "are true faces. *top-1*: the highest-scoring detection is the annotated face. Times: median and 90th "
        "percentile of `detect` per image (decoding excluded), OpenCV/onnxruntime limited to 2 threads (dlib runs "
        f"single-threaded), on {machine()}. Mean IoU: calibrated landmark box "
        "vs true (tight 68-point) landmark box, over the found faces."
    )
    if timing:
        caption += " " + timing
    if args.note:
        caption += " " + args.note
    text = f"# Face detectors\n\n{caption}\n\n{table(results)}\n"
    if skipped:
        text += "\nNot run: " + "; ".join(skipped) + ".\n"
    text += f"\nDefault detector (`facemark.detectors.DEFAULT_DETECTOR`): `{DEFAULT_DETECTOR}`.\n"
    if args.out is None and args.limit is None and not args.only:
        args.out = RESULTS
    if args.out is not None:
        write_report(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
        print(f"(a partial run: {RESULTS} not written; --out names a file for it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

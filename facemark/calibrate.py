"""Fitting the constants facemark ships: each detector's landmark-box calibration and keypoint
placement (``facemark/detectors/calibration.json``).

Inference only reads the fitted files; ``python -m bench.fit_detector_calibration`` calls these
functions on the training split and writes them. Box calibration: with ``cx, cy, w, h`` the
detector box and ``lcx, lcy, lw, lh`` the true landmark box of the matched face,
``a = median((lcx - cx) / w)``, ``b = median((lcy - cy) / h)``, ``c = median(lw / w)``,
``d = median(lh / h)`` (robust to the odd loose match). Keypoint placement
(:class:`facemark.detectors.base.KeypointPlacement`): ridge least squares of the upright
landmark box on :func:`facemark.detectors.base.placement_features`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facemark.detectors.base import (
    CALIBRATION_FILE, Calibration, Detection, KeypointPlacement, placement_features,
)
from facemark.files import write_atomic
from facemark.geometry import Box, CropRule, apply_affine, box_centre, box_from_points, crop_box_from_box, iou, upright_turn

#: The face box of the benchmarks: the crop recipe's box around the landmark box, unclipped.
FACE_BOX_RULE = CropRule(clip=False)


def face_box(landmark_box: Box) -> Box:
    """The landmark box grown to a face box by the crop recipe (not clipped to the image)."""
    return crop_box_from_box(landmark_box, None, FACE_BOX_RULE)


def _cxcywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def fit_calibration(detector_boxes, landmark_boxes) -> Calibration:
    """Median fit of the calibration from matched ``(N, 4)`` detector and landmark boxes."""
    det, lm = _cxcywh(detector_boxes), _cxcywh(landmark_boxes)
    if len(det) == 0 or len(det) != len(lm):
        raise ValueError(f"need matched box pairs to fit a calibration, got {len(det)} and {len(lm)}")
    a = np.median((lm[:, 0] - det[:, 0]) / det[:, 2])
    b = np.median((lm[:, 1] - det[:, 1]) / det[:, 3])
    c = np.median(lm[:, 2] / det[:, 2])
    d = np.median(lm[:, 3] / det[:, 3])
    return Calibration(float(a), float(b), float(c), float(d))


def placement_target(points: np.ndarray, centre: np.ndarray, size: float, roll: float) -> np.ndarray:
    """What a :class:`KeypointPlacement` predicts for a face with these true points: the box of the
    points turned upright by ``roll`` about ``centre``, as ``(cx, cy, w, h)`` relative to ``centre``
    in units of ``size``."""
    turned = apply_affine(upright_turn(tuple(centre), roll), points)
    box = box_from_points(turned)
    cx, cy = np.array(box_centre(box)) - centre
    return np.array([cx, cy, box[2] - box[0], box[3] - box[1]]) / size


def fit_placement(detections: list[Detection], points: list[np.ndarray], ridge: float = 1e-4) -> KeypointPlacement:
    """Fit a :class:`KeypointPlacement` on matched detections (with keypoints) and true ``(68, 2)`` points:
    ridge least squares, the penalty ``ridge`` per face."""
    rows, targets = [], []
    for d, p in zip(detections, points, strict=True):
        features, centre, size, roll = placement_features(d.box, d.keypoints)
        rows.append(features)
        targets.append(placement_target(p, centre, size, roll))
    if not rows or len(rows) < 2 * len(rows[0]):
        raise ValueError(f"need at least twice as many matched faces as features to fit a placement, got {len(rows)}")
    x, y = np.array(rows), np.array(targets)
    weights = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)
    return KeypointPlacement(tuple(tuple(round(float(v), 6) for v in row) for row in weights))


def placement_iou(placement: KeypointPlacement, detections: list[Detection], points: list[np.ndarray]) -> float:
    """Mean IoU of placed boxes with the true upright landmark boxes (both in the face's upright frame)."""
    values = []
    for d, p in zip(detections, points, strict=True):
        box, roll = placement.apply(d.box, d.keypoints)
        truth = box_from_points(apply_affine(upright_turn(box_centre(box), roll), p))
        values.append(iou(box, truth))
    return float(np.mean(values)) if values else float("nan")


def mean_calibrated_iou(calibration: Calibration, detector_boxes, landmark_boxes) -> float:
    """Mean IoU between calibrated detector boxes and the true landmark boxes."""
    pairs = list(zip(np.asarray(detector_boxes).reshape(-1, 4), np.asarray(landmark_boxes).reshape(-1, 4)))
    if not pairs:
        return float("nan")
    return float(np.mean([iou(calibration.apply(tuple(d)), tuple(t)) for d, t in pairs]))


def write_calibrations(entries: dict[str, dict], path: str | Path = CALIBRATION_FILE, note: str = "") -> dict:
    """Merge ``entries`` (``{key: {"a", "b", "c", "d", ...}}``) into the calibration file atomically.

    Entries of detectors not in ``entries`` are kept. Returns the whole file's content.
    """
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    detectors = dict(data.get("detectors", {}))
    detectors.update(entries)
    data = {
        "about": note or data.get("about", ""),
        "formula": "lcx = cx + a*w, lcy = cy + b*h, lw = c*w, lh = d*h; (cx, cy, w, h) of the detector box, "
                   "l* of the tight 68-point landmark box (0-based pixel centres)",
        "detectors": dict(sorted(detectors.items())),
    }
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return data


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most ``limit`` items spread evenly over ``items`` (all of them when ``limit`` is None)."""
    if not limit or limit >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def run_detections(detector, samples, cache: str | Path | None = None, progress: str = "") -> dict[str, dict]:
    """Run ``detector`` on each sample's image: ``{sample_id: {"detections": [...], "ms": t}}``.

    ``ms`` is the wall time of :meth:`Detector.detect` alone (image reading excluded). With
    ``cache`` (a JSON file), results already there are reused and new ones are added to it, so
    an interrupted run resumes; the caller keys the file by the detector's settings.
    """
    import sys
    import time

    from facemark.files import read_image

    done: dict[str, dict] = {}
    if cache is not None and Path(cache).is_file():
        done = json.loads(Path(cache).read_text())
    out = {}
    todo = [s for s in samples if s.sample_id not in done]
    for n, sample in enumerate(samples):
        if sample.sample_id in done:
            out[sample.sample_id] = done[sample.sample_id]
            continue
        image = read_image(sample.image_path)
        start = time.perf_counter()
        found = detector.detect(image)
        ms = (time.perf_counter() - start) * 1000
        out[sample.sample_id] = done[sample.sample_id] = {
            "detections": [[*d.box, d.score, *([] if d.keypoints is None else np.asarray(d.keypoints).ravel().tolist())]
                           for d in found], "ms": ms,
        }
        if progress and (len(done) % 50 == 0 or n == len(samples) - 1):
            print(f"  {progress}: {sum(1 for s in todo if s.sample_id in done)}/{len(todo)} images", file=sys.stderr,
                  flush=True)
            if cache is not None:
                write_atomic(cache, json.dumps(done))
    if cache is not None and todo:
        write_atomic(cache, json.dumps(done))
    return out


def detections_of(entry: dict) -> list[Detection]:
    """The :class:`Detection` list of one :func:`run_detections` entry (keypoints after the score, if any)."""
    return [Detection(tuple(float(v) for v in d[:4]), float(d[4]),
                      keypoints=np.array(d[5:], np.float32).reshape(-1, 2) if len(d) > 5 else None)
            for d in entry["detections"]]



def cache_file(cache_dir: Path | None, split: str, key: str, kwargs: dict) -> Path | None:
    """Where :func:`run_detections` caches the raw detections of one detector setting on one split."""
    if cache_dir is None:
        return None
    tag = "_".join(f"{k}-{v}" for k, v in sorted(kwargs.items()))
    safe = key.replace(":", "-")
    return cache_dir / f"{split}_{safe}{'_' + tag if tag else ''}.json"

"""Shared by the bench scripts: fitting and storing detector -> landmark-box calibrations, detection runs.

Not part of the package (nothing in ``facemark`` fits a calibration; it only reads
``facemark/detectors/calibration.json``). Bench scripts that import this module are run from the
repository root as modules, ``python -m bench.fit_detector_calibration``, so ``bench`` is a package
and no script edits ``sys.path``.

The fit is robust: with ``cx, cy, w, h`` the detector box and ``lcx, lcy, lw, lh`` the true
landmark box of the matched face, ``a = median((lcx - cx) / w)``, ``b = median((lcy - cy) / h)``,
``c = median(lw / w)``, ``d = median(lh / h)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facemark.detectors.base import CALIBRATION_FILE, Calibration, Detection
from facemark.files import write_atomic
from facemark.geometry import Box, CropRule, crop_box_from_box, iou

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w-lite"

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
            "detections": [[*d.box, d.score] for d in found], "ms": ms,
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
    """The :class:`Detection` list of one :func:`run_detections` entry."""
    return [Detection(tuple(float(v) for v in d[:4]), float(d[4])) for d in entry["detections"]]



def cache_file(cache_dir: Path | None, split: str, key: str, kwargs: dict) -> Path | None:
    """Where :func:`run_detections` caches the raw detections of one detector setting on one split."""
    if cache_dir is None:
        return None
    tag = "_".join(f"{k}-{v}" for k, v in sorted(kwargs.items()))
    safe = key.replace(":", "-")
    return cache_dir / f"{split}_{safe}{'_' + tag if tag else ''}.json"

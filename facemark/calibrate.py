"""Fitting the constants facemark ships: one place for every function that fits one.

Inference only reads the fitted values, where they are used; the ``bench/`` scripts load the data,
call these functions and write the values and their tables::

    fitted value                                     read from                                  fitted by
    each detector's box calibration and keypoint     facemark/detectors/calibration.json        fit_calibration, fit_placement
      placement                                                                                 (python -m bench.fit_detector_calibration)
    point scores and fit quality                     the model spec's ``quality`` (.pt, .onnx)  fit_quality, measure_quality
                                                                                                (python -m bench.fit_quality)
    the 3D mean face of head pose                    facemark/assets/mean_face_68.json          fit_mean_face
                                                                                                (python -m bench.fit_mean_face)
    the 68-point box -> five-point box mapping       facemark.schemes.FIVE_FROM_68_BOX          fit_five_box (python -m bench.fit_five_box)

Box calibration: with ``cx, cy, w, h`` the detector box and ``lcx, lcy, lw, lh`` the true landmark
box of the matched face, ``a = median((lcx - cx) / w)``, ``b = median((lcy - cy) / h)``,
``c = median(lw / w)``, ``d = median(lh / h)`` (robust to the odd loose match). Keypoint placement
(:class:`facemark.detectors.base.KeypointPlacement`): ridge least squares of the upright landmark
box on :func:`facemark.placement.placement_features`. Quality: logistic regressions on the
raw point features of :mod:`facemark.quality`. Mean face: generalised Procrustes over 3D faces
(:func:`fit_mean_face`). Five-point box: medians over 68-point faces (:func:`fit_five_box`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from facemark import pose
from facemark.detectors.base import CALIBRATION_FILE, Detection
from facemark.extras import require
from facemark.files import write_atomic
from facemark.geometry import (
    Box,
    CropRule,
    apply_affine,
    box_centre,
    box_from_points,
    crop_box_from_box,
    iou,
    upright_turn,
)
from facemark.images import read_image
from facemark.placement import Calibration, KeypointPlacement, placement_features
from facemark.quality import GOOD_NME, Logistic, QualityCalibration, face_design, point_design
from facemark.schemes import get_scheme, to_five

# --------------------------------------------------------------------------- detector boxes and placement

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


# --------------------------------------------------------------------------- point scores and fit quality


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> Logistic:
    """A standardised, L2-regularised logistic regression (scikit-learn) as a :class:`~facemark.quality.Logistic`.
    A column missing throughout (NaN: a one-pass model's flip spread) or constant is left out of the
    fit: its weight is 0 (and :class:`~facemark.quality.Logistic` reads a NaN as the fitted mean)."""
    LogisticRegression = require("sklearn.linear_model", "fitting the quality calibration").LogisticRegression
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(int)
    missing = np.isnan(x).all(0)
    if np.isnan(x[:, ~missing]).any():
        raise ValueError("quality features: NaN in a feature that is not missing throughout")
    x = np.where(missing, 0.0, x)
    mean, scale = x.mean(0), x.std(0)
    varies = x.max(0) > x.min(0)  # not std > 0: the std of a constant column comes out ~1e-12, not 0
    scale = np.where(varies, scale, 1.0)
    model = LogisticRegression(C=c, max_iter=1000).fit(((x - mean) / scale)[:, varies], y)
    coef = np.zeros(x.shape[1])
    coef[varies] = model.coef_[0]
    return Logistic(tuple(mean.tolist()), tuple(scale.tolist()), tuple(coef.tolist()), float(model.intercept_[0]))


def fit_quality(raw: np.ndarray, point_error: np.ndarray, note: str = "") -> QualityCalibration:
    """The calibration of the model spec's ``quality`` from ``(N, K, 3)`` raw point features of N
    predictions and their ``(N, K)`` point errors (normalised as NME): the point regression predicts
    error <= :data:`~facemark.quality.GOOD_NME` per point, the face regression NME <= GOOD_NME per
    prediction (the detector score is not a feature). Predictions without the flip test (a one-pass
    model's) have no flip spread (NaN throughout): it gets weight 0, and the calibration says
    ``flip_test=False``."""
    nme = point_error.mean(1)
    point = fit_logistic(point_design(raw).reshape(-1, raw.shape[-1]), point_error.reshape(-1) <= GOOD_NME)
    face = fit_logistic(face_design(raw), nme <= GOOD_NME)
    return QualityCalibration(point, face, flip_test=not bool(np.isnan(raw[..., 2]).all()), note=note)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` labels (scikit-learn)."""
    return float(require("sklearn.metrics", "measuring the quality calibration").roc_auc_score(positive, scores))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (SciPy)."""
    return float(require("scipy.stats", "measuring the quality calibration").spearmanr(a, b).statistic)


def measure_quality(d: dict, folds: int = 5) -> dict:
    """Out-of-fold figures of :func:`fit_quality` on predictions ``d`` (``"raw"`` (N, K, 3), ``"point_error"``
    (N, K), ``"face"`` (N,) the face each came from, ``"jittered"`` (N,) bool, ``"detector_score"`` (N,)):
    folds grouped by face, so no face scores itself. AUROC of ``1 - quality`` for NME > GOOD_NME (all
    predictions, unjittered ones, and single features), Brier score, reliability bins, and the Spearman
    correlation and AUROC of ``point_scores`` against the per-point error."""
    nme = d["point_error"].mean(1)
    fold = d["face"] % folds
    quality, scores = np.zeros(len(nme)), np.zeros(d["point_error"].shape)
    for f in range(folds):
        train, test = fold != f, fold == f
        cal = fit_quality(d["raw"][train], d["point_error"][train])
        quality[test] = cal.quality(d["raw"][test])
        scores[test] = cal.point_scores(d["raw"][test])
    bad = nme > GOOD_NME
    design = face_design(d["raw"])
    single = {"detector score (reported, not a feature)": d["detector_score"], "mean score-map peak": design[:, 0],
              "mean neighbour spread": -design[:, 2], "mean flip spread": -design[:, 4]}
    bins = np.digitize(quality, [0.5, 0.8, 0.95])
    return {
        "predictions": len(nme), "bad": int(bad.sum()), "bad_rate": float(bad.mean()),
        "auroc": auroc(-quality, bad),
        "auroc_10": auroc(-quality, nme > 0.10) if (nme > 0.10).any() else None,  # the failure rate's threshold
        "auroc_detector_boxes_only": auroc(-quality[~d["jittered"]], bad[~d["jittered"]]) if bad[~d["jittered"]].any() else None,
        "auroc_single": {name: auroc(-v, bad) for name, v in single.items() if not np.isnan(v).all()},
        "brier": float(np.mean((quality - ~bad) ** 2)),
        "point_spearman": spearman(scores.reshape(-1), d["point_error"].reshape(-1)),
        "point_auroc": auroc(-scores.reshape(-1), d["point_error"].reshape(-1) > GOOD_NME),
        "point_bad_rate": float((d["point_error"] > GOOD_NME).mean()),
        "reliability": [{"bin": label, "n": int((bins == b).sum()),
                         "mean_quality": float(quality[bins == b].mean()) if (bins == b).any() else None,
                         "good_rate": float((~bad)[bins == b].mean()) if (bins == b).any() else None}
                        for b, label in enumerate(["< 0.5", "0.5-0.8", "0.8-0.95", ">= 0.95"])],
    }


# --------------------------------------------------------------------------- the 3D mean face of head pose

#: the mean face's scale: its outer eye corners (points 36 and 45) lie this many units apart
EYE_CORNERS_APART = 90.0


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` (N, 3) moved onto ``dst`` by the least-squares similarity (no reflection; Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return scale * s @ rotation.T + mu_d


def frontal_frame(shape: np.ndarray) -> np.ndarray:
    """A ``(68, 3)`` face in the frontal frame: x along the outer eye and mouth corners (image left to
    image right), y from the eyes to the mouth and chin (down), z = x × y (away from the camera), origin
    at the nose tip, scaled so the outer eye corners are :data:`EYE_CORNERS_APART` units apart."""
    x = (shape[45] - shape[36]) + (shape[54] - shape[48]) + (shape[16] - shape[0])
    x /= np.linalg.norm(x)
    y = (shape[8] + shape[57]) / 2 - (shape[36] + shape[45]) / 2
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    axes = np.stack([x, y, np.cross(x, y)])  # rows: the new axes in the old frame
    out = (shape - shape[30]) @ axes.T
    return out * EYE_CORNERS_APART / np.linalg.norm(out[45] - out[36])


def procrustes_mean(shapes: list[np.ndarray]) -> np.ndarray:
    """The left-right symmetric generalised-Procrustes mean of ``(68, 3)`` faces, in the frontal frame."""
    flip = list(get_scheme(68).flip_perm)
    mean = shapes[0]
    for _ in range(10):  # generalised Procrustes: align all to the mean, re-average
        mean = frontal_frame(np.mean([umeyama(s, mean) for s in shapes], axis=0))
    mirrored = mean[flip] * [-1.0, 1.0, 1.0]
    return frontal_frame((mean + umeyama(mirrored, mean)) / 2)


def rotate_x(shape: np.ndarray, degrees: float) -> np.ndarray:
    """``shape`` turned about the x axis (through the origin, the nose tip) by ``degrees``."""
    a = math.radians(degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return shape @ rx.T


def median_pitch(face: np.ndarray, faces: list[tuple[np.ndarray, tuple[int, int]]]) -> float:
    """Median pitch (degrees) of ``[(68 points, image size)]`` solved by :func:`facemark.pose.head_pose`
    against the 3D ``face`` instead of the shipped one."""
    shipped = pose.mean_face
    pose.mean_face = lambda: face  # pose reads its 3D face through this function
    try:
        return float(np.median([pose.head_pose(points, size)[1] for points, size in faces]))
    finally:
        pose.mean_face = shipped


def fit_mean_face(shapes: list[np.ndarray], faces: list[tuple[np.ndarray, tuple[int, int]]], rounds: int = 3) -> np.ndarray:
    """The ``(68, 3)`` mean face of head pose from 3D faces ``shapes`` (OpenCV camera axes: x right, y
    down, z away from the camera), turned about x so that the median face of ``faces`` (2D points and
    image sizes) has pitch 0: :func:`procrustes_mean`, then ``rounds`` of pitch correction."""
    if len(shapes) < 5:
        raise ValueError(f"need at least 5 3D faces to fit a mean face, got {len(shapes)}")
    face = procrustes_mean(shapes)
    if face[30, 2] > face[36, 2]:
        raise ValueError("the nose tip lies behind the eyes: the 3D faces' depth axis points the wrong way")
    for _ in range(rounds):
        face = rotate_x(face, -median_pitch(face, faces))  # R_x(-pitch) of the pose module, about the nose tip
    return face


# --------------------------------------------------------------------------- the five-point box


def _boxes(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)  # (N, 4)


def fit_five_box(points: np.ndarray) -> dict:
    """From ``(N, 68, 2)`` points: ``"five_from_68_box"``, the five points' tight box as fractions of the
    68-point tight box (``(x0, y0, x1, y1)``, medians; :data:`facemark.schemes.FIVE_FROM_68_BOX`), and
    ``"crop"``, the margins (top, bottom, side, as fractions of the five-point box) that cut around
    the five points the crop the 68-point recipe (:class:`~facemark.geometry.CropRule`) cuts around 68."""
    points = np.asarray(points, dtype=np.float64)
    b68, b5 = _boxes(points), _boxes(to_five(points).astype(np.float64))
    w68, h68 = b68[:, 2] - b68[:, 0], b68[:, 3] - b68[:, 1]
    w5, h5 = b5[:, 2] - b5[:, 0], b5[:, 3] - b5[:, 1]
    fractions = (np.median((b5[:, 0] - b68[:, 0]) / w68), np.median((b5[:, 1] - b68[:, 1]) / h68),
                 np.median((b5[:, 2] - b68[:, 0]) / w68), np.median((b5[:, 3] - b68[:, 1]) / h68))
    rule = CropRule(clip=False)  # the 68-point model's crop around the 68-point box
    crop = np.stack([b68[:, 0] - rule.side * w68, b68[:, 1] - rule.top * h68,
                     b68[:, 2] + rule.side * w68, b68[:, 3] + rule.bottom * h68], axis=1)
    side = np.median(np.concatenate([(b5[:, 0] - crop[:, 0]) / w5, (crop[:, 2] - b5[:, 2]) / w5]))
    return {"five_from_68_box": tuple(float(v) for v in fractions),
            "crop": {"top": float(np.median((b5[:, 1] - crop[:, 1]) / h5)),
                     "bottom": float(np.median((crop[:, 3] - b5[:, 3]) / h5)), "side": float(side)}}


def mean_box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of two ``(N, 4)`` arrays of boxes, pair by pair."""
    return float(np.mean([iou(tuple(x), tuple(y)) for x, y in zip(a, b)]))

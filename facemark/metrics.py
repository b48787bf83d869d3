"""Landmark accuracy metrics: NME, CED, AUC, failure rate and their summary, written once.

Training, evaluation and benchmarks all call this module; nothing else computes NME.

Conventions:

* points are ``(B, K, 2)`` pixel coordinates (see :mod:`facemark.geometry`); a single ``(K, 2)``
  face is treated as a batch of one;
* NME of one face is the mean Euclidean point error divided by a per-face normaliser computed
  from the *ground truth* (never from the prediction), and is returned as a **fraction**:
  ``0.035`` means 3.5 %. Figures and printed tables multiply by 100 themselves;
* normalisers (:data:`NORMALISATIONS`, a dict name -> description), with point indices 0-based from the
  :class:`~facemark.schemes.PointScheme`:

  - ``inter_ocular``: distance between the outer eye corners (``scheme.outer_eye_corners``:
    36 and 45 for 68 points, 60 and 72 for WFLW's 98, 8 and 9 for COFW's 29 as HRNet uses);
  - ``inter_pupil``: distance between the pupils, each the mean of ``scheme.right_eye`` /
    ``scheme.left_eye`` points;
  - ``box_diagonal``: diagonal ``sqrt(w**2 + h**2)`` of the tight ground-truth landmark box;
  - ``box_area``: ``sqrt(w * h)`` of that box;

* a visibility mask ``(B, K)`` (True = visible) restricts the mean to visible points, the COFW
  convention; the normaliser still uses all ground-truth points;
* partial labels: a ground-truth point that is missing (NaN) counts as not visible, with or without
  a mask; :func:`evaluated_points` says how many points each face was scored on. A normaliser that
  needs a missing point (an eye corner) is not finite and raises, like a zero one;
* NMF (normalised mean flicker, LDEQ, Micaelli et al., CVPR 2023) of one face over a clip of ``T``
  frames: for each pair of consecutive frames, the change of the prediction minus the true motion,
  ``(pred[t] - pred[t-1]) - (gt[t] - gt[t-1])`` per point, divided by the normaliser of ``gt[t]``;
  NMF is the root mean square of those over points and frame pairs, a fraction like NME. A fixed
  bias scores 0 (it does not move); a prediction that jumps by ``a`` px and back scores ``a / d``;
* CED at threshold ``t`` is the fraction of faces with error ``<= t``; the failure rate at ``t``
  is the fraction with error ``> t`` (so the two add up to one);
* AUC follows 300-W: the area under the CED from 0 to ``max_error`` divided by ``max_error``,
  so 1 is perfect and 0 means every face fails. It is computed exactly, as
  ``mean(1 - min(e, max_error) / max_error)``, which is the integral of the step-shaped CED.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facemark.geometry import box_from_points
from facemark.schemes import PointScheme, get_scheme

# name -> short human text for figures and tables; iterating gives the names in this order
NORMALISATIONS: dict[str, str] = {
    "inter_ocular": "NME normalised by inter-ocular distance (outer eye corners)",
    "inter_pupil": "NME normalised by inter-pupil distance (eye-point means)",
    "box_diagonal": "NME normalised by the landmark-box diagonal",
    "box_area": "NME normalised by sqrt(width x height) of the landmark box",
}


def _fmt_indices(indices: tuple[int, ...]) -> str:
    """``(36, 37, 38)`` -> ``"36-38"``; non-contiguous indices are listed."""
    if len(indices) > 2 and list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    return ",".join(str(i) for i in indices)


def describe(kind: str, scheme: PointScheme | None = None, box: str | None = None) -> str:
    """Human text for a normalisation, for figure labels and printed tables.

    With a ``scheme`` the eye-based kinds name their 0-based points; ``box`` (e.g.
    ``"ground-truth landmark box"``) names the face-box protocol and is appended.
    """
    _check_kind(kind)
    text = NORMALISATIONS[kind]
    if scheme is not None and kind == "inter_ocular":
        a, b = scheme.outer_eye_corners
        text = f"NME normalised by inter-ocular distance (outer eye corners {a}, {b})"
        if scheme.name == "5":  # its "eye corners" are the eye centres: say so
            text = f"NME normalised by the eye-centre distance (points {a}, {b})"
    elif scheme is not None and kind == "inter_pupil":
        text = (
            "NME normalised by inter-pupil distance (means of points "
            f"{_fmt_indices(scheme.right_eye)} and {_fmt_indices(scheme.left_eye)})"
        )
    return f"{text}, {box}" if box else text


def _check_kind(kind: str) -> None:
    if kind not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {kind!r}; expected one of {list(NORMALISATIONS)}")


def _as_batch(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{name} must be (B, K, 2) or (K, 2), got shape {points.shape}")
    return points


def normaliser(gt: np.ndarray, kind: str = "inter_ocular", scheme: PointScheme | None = None) -> np.ndarray:
    """Per-face normalising distance ``(B,)`` in pixels from ground-truth points ``(B, K, 2)``.

    ``scheme`` defaults to ``get_scheme(K)``; the box kinds need no scheme. Raises ``ValueError``
    when any face's normaliser is zero (or not finite).
    """
    _check_kind(kind)
    gt = _as_batch(gt, "gt")
    if kind in ("inter_ocular", "inter_pupil"):
        scheme = scheme if scheme is not None else get_scheme(gt.shape[1])
        if scheme.num_points != gt.shape[1]:
            raise ValueError(f"scheme {scheme.name!r} has {scheme.num_points} points, gt has {gt.shape[1]}")
        if kind == "inter_ocular":
            a, b = scheme.outer_eye_corners
            right, left = gt[:, a], gt[:, b]
        else:
            right, left = scheme.pupils(gt)
        norm = np.linalg.norm(left - right, axis=-1)
    else:
        boxes = np.array([box_from_points(face) for face in gt]).reshape(-1, 4)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        norm = np.hypot(w, h) if kind == "box_diagonal" else np.sqrt(w * h)
    bad = np.flatnonzero(~(np.isfinite(norm) & (norm > 0)))
    if bad.size:
        raise ValueError(f"{kind} normaliser is zero or not finite for face(s) {bad[:10].tolist()}")
    return norm


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error of every point in pixels, ``(B, K)``."""
    pred, gt = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    return np.linalg.norm(pred - gt, axis=-1)


def nme(
    pred: np.ndarray,
    gt: np.ndarray,
    kind: str = "inter_ocular",
    scheme: PointScheme | None = None,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """Per-face normalised mean error ``(B,)`` as a fraction (0.035 = 3.5 %).

    ``visible`` ``(B, K)`` bool restricts each face's mean to its visible points; a face with no
    visible point raises ``ValueError``.
    """
    errors = point_errors(pred, gt)
    norm = normaliser(gt, kind, scheme)
    present = ~np.isnan(_as_batch(gt, "gt")).any(axis=-1)
    if visible is None and present.all():
        mean = errors.mean(axis=1)
    else:
        visible = present if visible is None else np.asarray(visible, dtype=bool).reshape(errors.shape[0], -1)
        if visible.shape != errors.shape:
            raise ValueError(f"visible {visible.shape} does not match points {errors.shape}")
        visible = visible & present
        counts = visible.sum(axis=1)
        if np.any(counts == 0):
            raise ValueError(f"face(s) {np.flatnonzero(counts == 0)[:10].tolist()} have no visible point")
        mean = np.where(visible, errors, 0.0).sum(axis=1) / counts
    return mean / norm


def evaluated_points(gt: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Number of points ``(B,)`` that :func:`nme` scores on each face: present (not NaN) and visible."""
    present = ~np.isnan(_as_batch(gt, "gt")).any(axis=-1)
    if visible is not None:
        present = present & np.asarray(visible, dtype=bool).reshape(present.shape[0], -1)
    return present.sum(axis=1)


def nmf(pred: np.ndarray, gt: np.ndarray, kind: str = "inter_ocular", scheme: PointScheme | None = None) -> float:
    """Normalised mean flicker of one face's ``(T, K, 2)`` points over ``T >= 2`` frames, a fraction
    (see the module): how much the prediction moves from frame to frame beyond the true motion."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or len(pred) < 2:
        raise ValueError(f"nmf needs (T >= 2, K, 2) pred and gt of one shape, got {pred.shape} and {gt.shape}")
    error = pred - gt  # (T, K, 2)
    jump = np.linalg.norm(np.diff(error, axis=0), axis=-1)  # (T - 1, K) px
    return float(np.sqrt(np.mean((jump / normaliser(gt[1:], kind, scheme)[:, None]) ** 2)))


def _errors(errors: np.ndarray) -> np.ndarray:
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    if errors.size == 0:
        raise ValueError("no errors given")
    if not np.all(np.isfinite(errors)):
        raise ValueError("errors contain NaN or infinity")
    return errors


def ced(errors: np.ndarray, max_error: float = 0.10, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: ``steps + 1`` thresholds from 0 to ``max_error`` and the
    fraction of faces with error ``<=`` each threshold."""
    errors = np.sort(_errors(errors))
    thresholds = np.linspace(0.0, max_error, steps + 1)
    fraction = np.searchsorted(errors, thresholds, side="right") / errors.size
    return thresholds, fraction


def ced_curves(errors: Mapping[str, np.ndarray], max_error: float = 0.10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The CED (:func:`ced`) of each ``name -> per-face errors``, keyed by a legend label that adds the
    curve's mean NME, AUC and failure rate at ``max_error``: what :func:`facemark.plots.plot_ced` draws."""
    pct = f"{max_error * 100:g}"
    curves = {}
    for name, values in errors.items():
        values = _errors(values)
        label = (f"{name}: NME {np.mean(values) * 100:.2f}%, AUC@{pct} {auc(values, max_error):.3f}, "
                 f"FR@{pct} {failure_rate(values, max_error) * 100:.1f}% (n={len(values)})")
        curves[label] = ced(values, max_error)
    return curves


def auc(errors: np.ndarray, max_error: float = 0.10) -> float:
    """Area under the CED from 0 to ``max_error``, divided by ``max_error`` (300-W convention)."""
    if max_error <= 0:
        raise ValueError("max_error must be positive")
    errors = _errors(errors)
    return float(np.mean(1.0 - np.minimum(errors, max_error) / max_error))


def failure_rate(errors: np.ndarray, threshold: float = 0.10) -> float:
    """Fraction of faces whose error is strictly greater than ``threshold``."""
    return float(np.mean(_errors(errors) > threshold))


def bootstrap_ci(errors: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(lo, hi)`` of the mean error (deterministic in ``seed``)."""
    errors = _errors(errors)
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    chunk = max(1, 1_000_000 // errors.size)  # bound the index matrix to ~8 MB
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        means[start:stop] = errors[rng.integers(0, errors.size, size=(stop - start, errors.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _pct_key(threshold: float) -> str:
    return f"{threshold * 100:g}"


def summarise(errors: np.ndarray, thresholds: tuple[float, ...] = (0.08, 0.10)) -> dict:
    """Summary of per-face errors (fractions), JSON-serialisable.

    Keys: ``mean``, ``median``, ``p90``, ``p95``, ``p99`` (percentiles of the per-face error);
    for each threshold ``t`` (named in percent, 0.08 -> ``8``): ``fr@8`` failure rate (error > t)
    and ``auc@8`` (300-W AUC up to t); ``ci95`` ``[lo, hi]`` 95 % bootstrap CI of the mean
    (seed 0, 1000 resamples); ``count`` number of faces.
    """
    errors = _errors(errors)
    out: dict = {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        **{f"p{q}": float(np.percentile(errors, q)) for q in (90, 95, 99)},
    }
    for t in thresholds:
        out[f"fr@{_pct_key(t)}"] = failure_rate(errors, t)
    for t in thresholds:
        out[f"auc@{_pct_key(t)}"] = auc(errors, t)
    out["ci95"] = list(bootstrap_ci(errors))
    out["count"] = int(errors.size)
    return out

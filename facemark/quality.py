"""Per-point confidence and fit quality: raw features from the model, calibrated by logistic regression.

The PIPNet models return, beside the points, two raw features per point
(:meth:`facemark.models.pipnet.PIPNet.decode_with_features`, and the ONNX output
``point_features``): the score-map peak and the distance between the point's own estimate and
its neighbours' estimates of it. With flip test the API adds a third, the distance between the
normal and the mirrored crop's predictions. All distances are in normalised crop units (crop side = 1).

A :class:`QualityCalibration` (fitted by :func:`facemark.calibrate.fit_quality`, which ``python -m
bench.fit_quality`` calls; stored in the model spec's ``quality`` field, so in the checkpoint and in
the ONNX metadata) maps them to

* ``point_scores`` ``(K,)``: the probability that each point lies within 8 % of the inter-ocular
  distance of the truth (one logistic regression shared by all points, on :func:`point_design`);
* ``quality``: the probability that the whole fit is good, NME (inter-ocular) <= 8 %
  (a logistic regression on face-level aggregates of the point features, :func:`face_design`).
  The detector score is not among them since Step 7b: it added nothing out of fold and, its
  values being bunched near 1, made the fit unstable (measured: docs/evaluation.md, "Confidence";
  bench/results/quality.md); calibrations
  written before (``face_features`` ending in ``detector_score``) still load and use it.

A model file without a calibration (files exported before it existed, or non-PIPNet and
classical models) gives ``point_scores = None`` and ``quality = None``: no uncalibrated guess.
Torch-free, so the ONNX path of the API never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: What ``quality`` predicts and what a "good" point is: error <= 8 % of the inter-ocular distance.
GOOD_NME = 0.08
POINT_FEATURES = ("log_peak", "log_nb_spread", "log_flip_spread")
#: every face-level feature :func:`face_design` can compute; ``FACE_FEATURES`` are those new fits use
ALL_FACE_FEATURES = ("mean_log_peak", "min_log_peak", "mean_log_nb_spread", "max_log_nb_spread",
                     "mean_log_flip_spread", "max_log_flip_spread", "detector_score")
FACE_FEATURES = ALL_FACE_FEATURES[:6]
_EPS = 1e-4


def raw_point_features(model_features: np.ndarray, flip_spread: np.ndarray | None) -> np.ndarray:
    """``(B, K, 3)``: the model's ``(B, K, 2)`` (peak, neighbour spread) plus the flip spread
    ``(B, K)`` (NaN without flip test: a missing feature, which :class:`Logistic` reads as its fitted mean)."""
    model_features = np.asarray(model_features, dtype=np.float64)
    flip = np.full(model_features.shape[:2], np.nan) if flip_spread is None else np.asarray(flip_spread, np.float64)
    return np.concatenate([model_features, flip[..., None]], axis=-1)


def point_design(raw: np.ndarray) -> np.ndarray:
    """``(..., 3)`` raw point features -> the logistic regression's inputs (logs of clipped values)."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.stack([np.log(np.clip(raw[..., 0], _EPS, None)), np.log(raw[..., 1] + _EPS),
                     np.log(raw[..., 2] + _EPS)], axis=-1)


def face_design(raw: np.ndarray, detector_score=1.0, names: tuple[str, ...] = FACE_FEATURES) -> np.ndarray:
    """``(B, K, 3)`` raw point features -> ``(B, len(names))`` face features (:data:`ALL_FACE_FEATURES`).
    ``detector_score`` ``(B,)`` is used only by calibrations that name it (written before Step 7b);
    it is clipped to 0..1 (MTCNN probabilities; a given box counts as 1)."""
    d = point_design(raw)
    score = np.clip(np.broadcast_to(np.asarray(detector_score, dtype=np.float64), d.shape[:1]), 0.0, 1.0)
    columns = dict(zip(ALL_FACE_FEATURES, (d[..., 0].mean(1), d[..., 0].min(1), d[..., 1].mean(1), d[..., 1].max(1),
                                           d[..., 2].mean(1), d[..., 2].max(1), score)))
    return np.stack([columns[n] for n in names], axis=-1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


@dataclass(frozen=True)
class Logistic:
    """``sigmoid(((x - mean) / scale) @ coef + intercept)``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0)  # a missing feature (no flip test) counts as its fitted mean
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> Logistic:
        return cls(tuple(map(float, d["mean"])), tuple(map(float, d["scale"])), tuple(map(float, d["coef"])),
                   float(d["intercept"]))


@dataclass(frozen=True)
class QualityCalibration:
    """The calibration stored in the model spec (``quality``): point and face logistic regressions."""

    point: Logistic
    face: Logistic
    flip_test: bool = True  # fitted on flip-test predictions (without them the flip spread is missing, NaN)
    note: str = ""
    face_features: tuple[str, ...] = FACE_FEATURES  # the columns of face_design the face regression takes

    def point_scores(self, raw: np.ndarray) -> np.ndarray:
        """``(B, K, 3)`` raw point features -> ``(B, K)`` probabilities that each point is good."""
        return self.point(point_design(raw))

    def quality(self, raw: np.ndarray, detector_score=1.0) -> np.ndarray:
        """``(B, K, 3)`` raw point features (and ``(B,)`` detector scores, for calibrations that use
        them) -> ``(B,)`` P(NME <= 8 %)."""
        return self.face(face_design(raw, detector_score, self.face_features))

    def to_dict(self) -> dict:
        return {"version": 2, "target": f"nme_io <= {GOOD_NME}", "point_features": list(POINT_FEATURES),
                "face_features": list(self.face_features), "point": self.point.to_dict(), "face": self.face.to_dict(),
                "flip_test": self.flip_test, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict | None) -> QualityCalibration | None:
        if not d:
            return None
        names = tuple(str(n) for n in d.get("face_features", ALL_FACE_FEATURES))
        unknown = [n for n in names if n not in ALL_FACE_FEATURES]
        if unknown:
            raise ValueError(f"face_features: unknown feature {unknown[0]!r}")
        return cls(Logistic.from_dict(d["point"]), Logistic.from_dict(d["face"]), bool(d.get("flip_test", True)),
                   str(d.get("note", "")), names)


"""A face and everything facemark can say about it: :class:`Face`, the output of :class:`facemark.Landmarker`.

The data only (the Landmarker fills it; :meth:`Face.to_dict` is its one JSON form), so the modules
under the API (tracking) can use it without importing the API.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facemark.geometry import Box


@dataclass
class Face:
    """One face found by :meth:`Landmarker.detect`: everything a caller can ask for about it."""

    box: Box  # the detector's face box (or the given box)
    score: float
    points: np.ndarray  # (K, 2) original-image pixels
    pose: tuple[float, float, float] | None = None  # (yaw, pitch, roll) degrees, detect(pose=True); see facemark.pose
    aligned: np.ndarray | None = None  # (112, 112, 3) BGR ArcFace-aligned chip, detect(aligned=True)
    track_id: int | None = None  # stable id of the face on video (Landmarker.track, facemark.track)
    point_scores: np.ndarray | None = None  # (K,) 0..1 per point (facemark.quality); None without a calibration
    quality: float | None = None  # 0..1, estimated P(NME <= 8 % of the inter-ocular distance); None likewise
    pose_reason: str | None = None  # why ``pose`` is None although it was asked for (facemark.pose.PoseError)

    def to_dict(self, aligned_file: str | Path | None = None) -> dict:
        """The one JSON form of a face (the CLI's JSON and the HTTP service's answers): box and points
        (pixels, 2 decimals), score (3 decimals), and when set: pose (degrees, 2 decimals; asked for but
        not estimable: ``"pose": null`` and ``"pose_reason"``), track_id, quality and point_scores
        (3 decimals), and the aligned chip. Each key has one form: ``"aligned_png_base64"`` is always
        the chip itself (PNG, base64: the API and the HTTP service); when the caller wrote the chip to
        ``aligned_file`` instead (``facemark predict --align``), the dict has ``"aligned_file"``, that
        file's path, and no ``"aligned_png_base64"``."""
        out = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 3),
            "points": np.asarray(self.points, dtype=np.float64).round(2).tolist(),
        }
        if self.pose is not None:
            out["pose"] = {k: round(float(v), 2) for k, v in zip(("yaw", "pitch", "roll"), self.pose)}
        elif self.pose_reason is not None:
            out["pose"], out["pose_reason"] = None, self.pose_reason
        if self.track_id is not None:
            out["track_id"] = int(self.track_id)
        if self.quality is not None:
            out["quality"] = round(float(self.quality), 3)
        if self.point_scores is not None:
            out["point_scores"] = np.asarray(self.point_scores, dtype=np.float64).round(3).tolist()
        if self.aligned is not None and aligned_file is not None:
            out["aligned_file"] = str(aligned_file)
        elif self.aligned is not None:
            out["aligned_png_base64"] = base64.b64encode(cv2.imencode(".png", self.aligned)[1].tobytes()).decode()
        return out

    def to_row(self, index: int) -> dict:
        """The face as a row of ``facemark bulk``'s Parquet (its face columns; :mod:`facemark.bulk.rows`):
        ``face`` (``index``: 0, 1, ... in detector-score order), box, score, points, point_scores and
        quality, at full float32 precision (not rounded as in :meth:`to_dict`); None where unset."""
        return {"face": int(index), "box": [float(v) for v in self.box], "score": float(self.score),
                "points": np.asarray(self.points, np.float32).tolist(),
                "point_scores": None if self.point_scores is None
                else np.asarray(self.point_scores, np.float32).tolist(),
                "quality": None if self.quality is None else float(self.quality)}

    @property
    def track(self) -> int | None:
        """The former name of :attr:`track_id`."""
        return self.track_id

    @track.setter
    def track(self, value: int | None) -> None:
        self.track_id = value

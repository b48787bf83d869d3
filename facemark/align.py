"""Face alignment: a similarity warp of five landmarks onto the ArcFace 112 x 112 template.

The five points are the two eye centres (mean of each eye's points), the nose tip and the two
mouth corners. The template lists them *image-left first*; in facemark's schemes "right" is the
subject's right, which is the image left, so ``right_eye`` maps to the template's first point.
Crops match what ArcFace-style face-recognition models expect (``size=112``).
"""

from __future__ import annotations

import numpy as np

from facemark.geometry import warp
from facemark.schemes import PointScheme, get_scheme

#: The standard 112 x 112 ArcFace template (insightface): image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner; pixel-centre coordinates.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def five_points(points: np.ndarray, scheme: PointScheme | None = None) -> np.ndarray:
    """``(5, 2)``: image-left eye centre, image-right eye centre, nose tip, image-left and
    image-right mouth corners, from ``(K, 2)`` points of ``scheme`` (default: by point count)."""
    points = np.asarray(points, dtype=np.float64)
    scheme = scheme or get_scheme(len(points))
    if scheme.nose_tip is None or scheme.mouth_corners is None:
        raise ValueError(f"scheme {scheme.name!r} has no nose tip / mouth corners for alignment")
    right, left = scheme.pupils(points)  # subject's right = image left
    return np.stack([right, left, points[scheme.nose_tip], *points[list(scheme.mouth_corners)]])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) ``src -> dst`` as a 2x3
    matrix (Umeyama 1991; closed form, so no RANSAC randomness with only five points)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])  # no reflections
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def alignment_matrix(points: np.ndarray, scheme: PointScheme | None = None, size: int = 112) -> np.ndarray:
    """2x3 matrix from image pixel centres to the ``size`` x ``size`` aligned crop."""
    return similarity(five_points(points, scheme), ARCFACE_TEMPLATE * (size / 112.0))


def align_face(image: np.ndarray, points: np.ndarray, scheme: PointScheme | None = None, size: int = 112) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of the face with ``(K, 2)`` ``points`` in ``image``."""
    return warp(image, alignment_matrix(points, scheme, size), size)

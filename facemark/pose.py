"""Head pose (yaw, pitch, roll) from 2D landmarks: ``cv2.solvePnP`` against a 3D mean face.

The points are fitted against the 3D mean face in ``facemark/assets/mean_face_68.json`` (fitted
from AFLW2000-3D by facemark.calibrate.fit_mean_face, ``python -m bench.fit_mean_face``), in OpenCV camera axes: x to the image
right, y down, z away from the camera, so a face looking straight at the camera has the identity
rotation. Which mean-face point each point of a scheme is, its scheme file says (``pose``:
:attr:`facemark.schemes.PointScheme.pose_points`; a point may be the mean of several, as the
5-point scheme's eye centres are); at least :data:`MIN_POSE_POINTS` of them are needed, else
:class:`PoseError` says why. The camera is a pinhole with focal length = image width and the
principal point at the image centre; for a rough pose the true focal length matters little.
The iterative solver starts from a frontal face at the distance that matches the face's size, so
a near-profile or symmetric face does not fall into a mirror solution (roll or pitch near ±180°).

Angles are degrees, with ``R = Rz(-roll) @ Ry(-yaw) @ Rx(-pitch)`` (see :func:`rotation_matrix`):

* ``yaw > 0``: the face turns toward the image's right (the subject's left);
* ``pitch > 0``: the face looks up;
* ``roll > 0``: the face is rotated counter-clockwise on screen, the convention of every roll in
  facemark (:meth:`facemark.api.Landmarker.placement`, boxes with ``"roll"``, detections).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from facemark.schemes import PointScheme, get_scheme

MEAN_FACE_FILE = Path(__file__).with_name("assets") / "mean_face_68.json"
#: the fewest pose points (points of the scheme with a mean-face counterpart) a pose is fitted to
MIN_POSE_POINTS = 5


class PoseError(ValueError):
    """Why a face has no head pose, in one line (a scheme without pose points, no solution)."""


@lru_cache(maxsize=1)
def mean_face() -> np.ndarray:
    """The ``(68, 3)`` 3D mean face (camera axes, nose tip at the origin; see the module docstring)."""
    return np.asarray(json.loads(MEAN_FACE_FILE.read_text())["points"], dtype=np.float64)


def model_and_image_points(points: np.ndarray, scheme: PointScheme | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Matching ``(N, 3)`` mean-face points and ``(N, 2)`` image points for ``(K, 2)`` points of
    ``scheme`` (its ``pose_points``; missing (NaN) points left out); :class:`PoseError` when fewer
    than :data:`MIN_POSE_POINTS` remain."""
    points = np.asarray(points, dtype=np.float64)
    scheme = scheme or get_scheme(len(points))
    named = [(i, ref) for i, ref in enumerate(scheme.pose_points) if ref is not None]
    if len(named) < MIN_POSE_POINTS:
        raise PoseError(f"scheme {scheme.name!r} has {'no' if not named else f'only {len(named)}'} pose points (head "
                        f"pose needs {MIN_POSE_POINTS}; a scheme file's 'pose' list names them)")
    used = [(i, ref) for i, ref in named if np.isfinite(points[i]).all()]
    if len(used) < MIN_POSE_POINTS:
        raise PoseError(f"only {len(used)} of the face's pose points are known (head pose needs {MIN_POSE_POINTS})")
    face = mean_face()
    return np.stack([face[list(ref)].mean(0) for _, ref in used]), points[[i for i, _ in used]]


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics for an image of ``(width, height)``: focal = width, centred (pixel centres)."""
    width, height = image_size
    return np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The model -> camera rotation for angles in degrees (the convention of the module docstring)."""
    a, b, g = np.radians([-pitch, -yaw, -roll])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`rotation_matrix`: ``(yaw, pitch, roll)`` in degrees."""
    r = np.asarray(rotation, dtype=np.float64)
    b = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    a = math.atan2(r[2, 1], r[2, 2])
    g = math.atan2(r[1, 0], r[0, 0])
    return -math.degrees(b), -math.degrees(a), -math.degrees(g)


def head_pose(
    points: np.ndarray, image_size: tuple[int, int], scheme: PointScheme | None = None
) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of the face with ``(K, 2)`` points in an image of
    ``image_size = (width, height)``; see the module docstring for the signs. :class:`PoseError`
    (one line) when it cannot be estimated."""
    model_points, image_points = model_and_image_points(points, scheme)
    camera = camera_matrix(image_size)
    # start from a frontal face at the distance that gives it its size in the image, and let the
    # iterative solver refine: a near-profile or symmetric face then cannot fall into the mirror
    # solution (roll or pitch near 180 degrees) that a solver without a start point can return
    depth = camera[0, 0] * np.ptp(model_points[:, 0]) / max(float(np.ptp(image_points[:, 0])), 1.0)
    centre = image_points.mean(0)
    start = np.array([(centre[0] - camera[0, 2]) * depth / camera[0, 0], (centre[1] - camera[1, 2]) * depth / camera[1, 1],
                      depth]) - model_points.mean(0)
    ok, rvec, tvec = cv2.solvePnP(model_points, image_points, camera, None, rvec=np.zeros((3, 1)),
                                  tvec=start.reshape(3, 1), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0 or not np.isfinite(rvec).all():
        raise PoseError("solvePnP found no solution for this face's points")
    return angles_from_rotation(cv2.Rodrigues(rvec)[0])

"""Head pose (yaw, pitch, roll) from 2D landmarks: ``cv2.solvePnP`` against a generic 3D face.

The 3D model is the widely used six-point generic face (nose tip, chin, outer eye corners, mouth
corners; arbitrary units, from S. Mallick, "Head Pose Estimation using OpenCV and Dlib",
LearnOpenCV 2016), rewritten in OpenCV camera axes (x to the image right, y down, z away from the
camera), so a face looking straight at the camera has the identity rotation. The camera is a
pinhole with focal length = image width and the principal point at the image centre; for a rough
pose the true focal length matters little.

Angles are degrees, with ``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` (see :func:`rotation_matrix`):

* ``yaw > 0``: the face turns toward the image's right (the subject's left);
* ``pitch > 0``: the face looks up;
* ``roll > 0``: the face is rotated clockwise in the image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facemark.schemes import PointScheme, get_scheme

# nose tip, chin, image-left outer eye corner, image-right outer eye corner, image-left and
# image-right mouth corners (LearnOpenCV's model with y and z negated: it has y up, z to the camera)
MODEL_POINTS = np.array(
    [[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0], [225.0, -170.0, 135.0],
     [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]],
    dtype=np.float64,
)

# the chin is in no scheme's named groups: the jaw point at the middle of the chin
_CHIN = {68: 8, 98: 16}


def six_points(points: np.ndarray, scheme: PointScheme | None = None) -> np.ndarray:
    """The image points matching :data:`MODEL_POINTS`, from ``(K, 2)`` points of ``scheme``."""
    points = np.asarray(points, dtype=np.float64)
    scheme = scheme or get_scheme(len(points))
    if scheme.num_points not in _CHIN or scheme.nose_tip is None or scheme.mouth_corners is None:
        raise ValueError(f"head pose needs a scheme with a chin point ({sorted(_CHIN)} points), got {scheme.name!r}")
    index = [scheme.nose_tip, _CHIN[scheme.num_points], *scheme.outer_eye_corners, *scheme.mouth_corners]
    return points[index]


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics for an image of ``(width, height)``: focal = width, centred (pixel centres)."""
    width, height = image_size
    return np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The model -> camera rotation for angles in degrees (the convention of the module docstring)."""
    a, b, g = np.radians([-pitch, -yaw, roll])
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
    return -math.degrees(b), -math.degrees(a), math.degrees(g)


def head_pose(
    points: np.ndarray, image_size: tuple[int, int], scheme: PointScheme | None = None
) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of the face with ``(K, 2)`` points in an image of
    ``image_size = (width, height)``; see the module docstring for the signs."""
    image_points = six_points(points, scheme)
    camera = camera_matrix(image_size)
    ok, rvec, _ = cv2.solvePnP(MODEL_POINTS, image_points, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these points")
    return angles_from_rotation(cv2.Rodrigues(rvec)[0])

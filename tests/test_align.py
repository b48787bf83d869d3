"""facemark.align: five points onto the ArcFace template."""

from __future__ import annotations

import cv2
import numpy as np

from facemark.align import ARCFACE_TEMPLATE, align_face
from facemark.schemes import get_scheme


def test_align_face_puts_the_five_points_on_the_template():
    scheme = get_scheme(68)
    angle, scale, shift = np.radians(25), 2.3, np.array([140.0, 90.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE @ rot.T + shift  # where the five points lie in the photo
    points = np.zeros((68, 2))
    ring = 3 * np.stack([np.cos(np.arange(6) / 6 * 2 * np.pi), np.sin(np.arange(6) / 6 * 2 * np.pi)], 1)
    points[list(scheme.right_eye)] = src[0] + ring  # subject's right eye = image left = template[0]
    points[list(scheme.left_eye)] = src[1] + ring
    points[scheme.nose_tip], points[list(scheme.mouth_corners)] = src[2], src[3:]
    for target, centre in zip(ARCFACE_TEMPLATE, src):
        blob = np.zeros((400, 400, 3), np.uint8)
        cv2.circle(blob, tuple(int(round(v * 16)) for v in centre), 5 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
        crop = align_face(blob, points, scheme).astype(np.float64)[..., 0]
        ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]]
        found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        assert np.abs(found - target).max() < 1.0

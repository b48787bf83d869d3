"""Synthetic video clips with exactly known points, made from an annotated photo (there is no annotated
video): what ``python -m bench.bench_video`` and tests/test_track.py measure tracking on. Apart from
:mod:`facemark.track`, which never needs it."""

from __future__ import annotations

import math

import cv2
import numpy as np

from facemark.geometry import box_from_points


def make_clip(image: np.ndarray, points: np.ndarray, frames: int = 60, kind: str = "still", seed: int = 0,
              face_size: float = 170.0, noise: float = 3.0, jpeg: int = 80, size: tuple[int, int] = (640, 480)
              ) -> tuple[list[np.ndarray], np.ndarray]:
    """``(frames, points (T, K, 2))``: a synthetic clip of the face with known ``points`` in ``image``, to
    measure tracking without annotated video (``python -m bench.bench_video`` and the tests).

    The face is scaled to ``face_size`` px (square root of its landmark-box area) and centred in a
    ``size`` frame. ``kind="moving"`` adds a smooth trajectory: translation up to about 60 x 30 px,
    rotation up to 10 degrees and zoom up to 10 % around the face centre, phases drawn from
    ``seed``. Every frame gets fresh Gaussian noise (``noise`` grey levels) and JPEG ``jpeg``.
    """
    if kind not in ("still", "moving"):
        raise ValueError(f"kind must be 'still' or 'moving', got {kind!r}")
    rng = np.random.default_rng(seed)
    points = np.asarray(points, np.float64)
    x0, y0, x1, y1 = box_from_points(points)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    base = face_size / math.sqrt(max((x1 - x0) * (y1 - y0), 1.0))
    target = np.array(size, np.float64) / 2
    phase = rng.uniform(0, 2 * math.pi, 4)
    out_frames, out_points = [], []
    for t in range(frames):
        u = 2 * math.pi * t / max(frames, 1)
        if kind == "moving":
            shift = np.array([60 * math.sin(u + phase[0]), 30 * math.sin(2 * u + phase[1])])
            angle, zoom = 10 * math.sin(u + phase[2]), 1 + 0.1 * math.sin(u + phase[3])
        else:
            shift, angle, zoom = np.zeros(2), 0.0, 1.0
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, base * zoom)
        matrix[:, 2] += target + shift - centre  # the face centre lands at the frame centre + shift
        frame = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # no mirrored face copies
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_COLOR)
        out_frames.append(frame)
        out_points.append(points @ matrix[:, :2].T + matrix[:, 2])
    return out_frames, np.stack(out_points)

"""Point schemes: how many points, their names, the mirror permutation and the NME normaliser.

"Right" means the subject's right (image left), as in 300-W. ``flip_perm[i]`` is the index of the
point that point ``i`` becomes after a horizontal flip of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _perm_from_pairs(num_points: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(num_points))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


@dataclass(frozen=True)
class PointScheme:
    name: str
    num_points: int
    flip_perm: tuple[int, ...]
    outer_eye_corners: tuple[int, int]  # inter-ocular normaliser (subject's right, left)
    right_eye: tuple[int, ...]  # points whose mean is the right pupil
    left_eye: tuple[int, ...]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # five points (eye centres, nose tip, mouth corners) used for face alignment and pose
    nose_tip: int | None = None
    mouth_corners: tuple[int, int] | None = None

    def flip(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror ``(..., K, 2)`` pixel points of an image of ``width`` pixels (pixel centres)."""
        flipped = np.array(points, dtype=np.float32, copy=True)[..., self.flip_perm, :]
        flipped[..., 0] = (width - 1) - flipped[..., 0]
        return flipped

    def flip_normalised(self, points: np.ndarray) -> np.ndarray:
        """Mirror ``(..., K, 2)`` points in 0..1 crop coordinates."""
        flipped = np.array(points, dtype=np.float32, copy=True)[..., self.flip_perm, :]
        flipped[..., 0] = 1.0 - flipped[..., 0]
        return flipped

    def pupils(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points)
        return points[..., self.right_eye, :].mean(axis=-2), points[..., self.left_eye, :].mean(axis=-2)


def _scheme_68() -> PointScheme:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    groups = {
        "jaw": tuple(range(0, 17)),
        "right_brow": tuple(range(17, 22)),
        "left_brow": tuple(range(22, 27)),
        "nose_bridge": tuple(range(27, 31)),
        "nostrils": tuple(range(31, 36)),
        "right_eye": tuple(range(36, 42)),
        "left_eye": tuple(range(42, 48)),
        "outer_lips": tuple(range(48, 60)),
        "inner_lips": tuple(range(60, 68)),
    }
    return PointScheme(
        "68", 68, _perm_from_pairs(68, pairs), (36, 45), groups["right_eye"], groups["left_eye"], groups,
        nose_tip=30, mouth_corners=(48, 54),
    )


def _scheme_98() -> PointScheme:
    pairs = [(i, 32 - i) for i in range(16)]  # jaw
    pairs += [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]
    pairs += [(55, 59), (56, 58)]
    pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97)]
    groups = {
        "jaw": tuple(range(0, 33)),
        "right_brow": tuple(range(33, 42)),
        "left_brow": tuple(range(42, 51)),
        "nose": tuple(range(51, 60)),
        "right_eye": tuple(range(60, 68)),
        "left_eye": tuple(range(68, 76)),
        "outer_lips": tuple(range(76, 88)),
        "inner_lips": tuple(range(88, 96)),
        "pupils": (96, 97),
    }
    return PointScheme(
        "98", 98, _perm_from_pairs(98, pairs), (60, 72), groups["right_eye"], groups["left_eye"], groups,
        nose_tip=54, mouth_corners=(76, 82),
    )


def _scheme_29() -> PointScheme:
    # COFW: pairs as in the COFW release (1-based: 1-2, 3-4, 5-7, 6-8, 9-10, 11-12, 13-15, 14-16,
    # 17-18, 19-20, 23-24); the normaliser is points 9 and 10 (1-based), as HRNet evaluates COFW.
    pairs = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)]
    return PointScheme(
        "29", 29, _perm_from_pairs(29, pairs), (8, 9), (8, 10, 12, 13, 16), (9, 11, 14, 15, 17),
        {"all": tuple(range(29))}, nose_tip=20, mouth_corners=(22, 23),
    )


def _scheme_5() -> PointScheme:
    # The order of the CUHK lists (facemark.data.formats.cuhk): image-left eye centre, image-right eye
    # centre, nose tip, image-left mouth corner, image-right mouth corner. Image left is the subject's
    # right, so point 0 is the "right" eye here as in 300-W, and NME is normalised by the eye-centre
    # distance (points 0 and 1), not by outer eye corners, which this scheme does not have.
    return PointScheme(
        "5", 5, _perm_from_pairs(5, [(0, 1), (3, 4)]), (0, 1), (0,), (1,),
        {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)}, nose_tip=2, mouth_corners=(3, 4),
    )


SCHEMES: dict[int, PointScheme] = {s.num_points: s for s in (_scheme_68(), _scheme_98(), _scheme_29(), _scheme_5())}

#: The 5-point tight box from a 68-point tight box, as fractions of the 68-point box's width and
#: height: ``(x0, y0, x1, y1)`` of the five points' box = ``x0_68 + f0 * w68`` ... (medians over the
#: 1621 300w-lite training faces, ``python -m bench.fit_five_box``). Detector calibrations give the
#: 68-point box; a 5-point model's ``detect`` maps it with this before cropping.
FIVE_FROM_68_BOX = (0.2645, 0.1730, 0.7419, 0.6857)


def five_from_68_box(box) -> tuple[float, float, float, float]:
    """The expected tight box of the five points of a face whose 68-point tight box is ``box``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    f = FIVE_FROM_68_BOX
    return x0 + f[0] * (x1 - x0), y0 + f[1] * (y1 - y0), x0 + f[2] * (x1 - x0), y0 + f[3] * (y1 - y0)


def to_five(points: np.ndarray) -> np.ndarray:
    """``(..., K, 2)`` points of a 68/98/29-point scheme as ``(..., 5, 2)`` points of the 5-point scheme:
    eye centre = mean of the eye's points (68: 36-41 and 42-47), nose tip (68: 30), mouth corners
    (68: 48 and 54). Five points are returned as they are. A missing (NaN) eye point makes its centre NaN."""
    points = np.asarray(points, dtype=np.float32)
    scheme = get_scheme(points.shape[-2])
    if scheme.num_points == 5:
        return points.copy()
    if scheme.nose_tip is None or scheme.mouth_corners is None:
        raise ValueError(f"scheme {scheme.name!r} has no nose tip / mouth corners: no 5-point mapping")
    right, left = scheme.pupils(points)
    return np.stack([right, left, points[..., scheme.nose_tip, :], points[..., scheme.mouth_corners[0], :],
                     points[..., scheme.mouth_corners[1], :]], axis=-2).astype(np.float32)


#: ``facemark data convert --to`` targets
CONVERSIONS = {"5pt": to_five}


def get_scheme(num_points: int) -> PointScheme:
    try:
        return SCHEMES[int(num_points)]
    except KeyError:
        raise ValueError(f"no point scheme with {num_points} points; known: {sorted(SCHEMES)}") from None

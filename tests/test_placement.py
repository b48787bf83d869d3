"""Placement (facemark.placement): one eye-roll formula, placement from points, the agreement rule,
calibrations, keypoint placement, and a tracked face's steady crop."""

import numpy as np
import pytest

from facemark.geometry import box_from_points, upright_turn
from facemark.placement import (
    Calibration,
    KeypointPlacement,
    Steadiness,
    SteadyPlacement,
    eye_roll,
    from_points,
    keypoint_roll,
    points_roll,
)
from facemark.schemes import get_scheme


def test_eye_roll_is_counter_clockwise_on_screen():
    assert eye_roll((0, 0), (10, 0)) == pytest.approx(0.0)
    assert eye_roll((0, 0), (10, -10)) == pytest.approx(45.0)  # left eye higher on screen (y down)
    assert eye_roll((0, 0), (10, 10)) == pytest.approx(-45.0)
    assert keypoint_roll(np.array([[0, 0], [10, -10], [5, 5]])) == pytest.approx(45.0)


@pytest.mark.parametrize("scheme", [get_scheme(68), get_scheme(5)])
def test_from_points_undoes_a_turn(scheme):
    """Points of an upright face turned by 20 degrees: their placement is the roll and the upright box."""
    rng = np.random.default_rng(0)
    upright = rng.uniform(100, 200, (scheme.num_points, 2))
    upright[list(scheme.right_eye), 0] = rng.uniform(110, 120, len(scheme.right_eye))  # image-left eye
    upright[list(scheme.left_eye), 0] = rng.uniform(170, 180, len(scheme.left_eye))
    right, left = scheme.pupils(upright)
    upright[:, 1] += (right[1] - left[1]) * (upright[:, 0] - right[0]) / (left[0] - right[0])  # level eye line
    assert points_roll(upright, scheme) == pytest.approx(0.0, abs=1e-6)
    centre = np.array([150.0, 150.0])
    turn = upright_turn(tuple(centre), -20.0)  # turns the face 20 degrees counter-clockwise on screen
    turned = upright @ turn[:, :2].T + turn[:, 2]
    box, roll = from_points(turned, scheme)
    assert roll == pytest.approx(20.0, abs=1e-6)
    want = box_from_points(upright)
    assert (box[2] - box[0], box[3] - box[1]) == pytest.approx((want[2] - want[0], want[3] - want[1]), abs=1e-3)


def test_calibration_round_trip_and_keypoint_placement_shape_check():
    cal = Calibration(0.1, -0.2, 0.8, 1.1)
    box = (10.0, 20.0, 110.0, 220.0)
    assert cal.invert(cal.apply(box)) == pytest.approx(box)
    placement = KeypointPlacement(tuple((0.0, 0.0, 1.0, 1.0) if i == 12 else (0.0,) * 4 for i in range(13)))
    keypoints = np.array([[40, 60], [70, 60], [55, 80], [55, 95], [20, 70], [90, 70]], np.float32)
    placed, roll = placement.apply((0, 0, 100, 100), keypoints)
    assert roll == pytest.approx(0.0) and placed == pytest.approx((0.0, 0.0, 100.0, 100.0))
    with pytest.raises(ValueError, match="expects 13 features"):
        placement.apply((0, 0, 100, 100), keypoints[:4])


def _placement(cx: float, cy: float, size: float, roll: float):
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), roll


def test_a_steady_placement_holds_still_on_noise_and_follows_a_move():
    """At rest the crop barely moves however the points shake; moving, it keeps up (its step ahead
    leaves it on the face, not a frame behind), and it turns the short way across +-180 degrees."""
    rng = np.random.default_rng(0)
    steady = SteadyPlacement(Steadiness())
    shaking = [_placement(*(rng.normal(0, 0.3, 2) + 200), 150 + rng.normal(0, 0.3), rng.normal(0, 0.3))
               for _ in range(60)]  # a 150 px face at rest, its placement shaking by 0.3 px and 0.3 degrees
    out = [steady(placement, i / 30) for i, placement in enumerate(shaking)]
    moves = {name: np.abs(np.diff([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b, _ in placements[10:]], axis=0)).mean()
             for name, placements in (("raw", shaking), ("steady", out))}
    assert moves["steady"] < 0.6 * moves["raw"]
    turns = {name: np.abs(np.diff([roll for _, roll in placements[10:]])).mean()
             for name, placements in (("raw", shaking), ("steady", out))}
    assert turns["steady"] < 0.6 * turns["raw"]
    for i in range(60, 120):  # then moving right at 6 px per frame
        box, _ = steady(_placement(200 + 6 * (i - 59), 200, 150, 0.0), i / 30)
    assert abs((box[0] + box[2]) / 2 - (200 + 6 * 61)) < 3.0  # where the face is in the next frame
    lagging = SteadyPlacement(Steadiness(ahead=False))
    for i in range(60, 120):
        box, _ = lagging(_placement(200 + 6 * (i - 59), 200, 150, 0.0), i / 30)
    assert abs((box[0] + box[2]) / 2 - (200 + 6 * 61)) > 5.0  # without the step ahead: a frame behind
    turning = SteadyPlacement(Steadiness())
    rolls = [turning(_placement(200, 200, 150, roll), i / 30)[1] for i, roll in enumerate([178.0, -179.0, -178.0])]
    assert all(abs((roll - 180.0 + 180) % 360 - 180) < 3.0 for roll in rolls)  # near 180, never through 0

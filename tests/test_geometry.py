import numpy as np
import pytest

from facemark.geometry import (
    SEED_CROP,
    CropRule,
    apply_affine,
    box_from_points,
    crop_affine,
    crop_box_from_box,
    crop_image,
    from_crop,
    rotate_face,
    to_crop,
    turned_box,
    upright_turn,
)


def test_recipe_margins():
    box = (100.0, 200.0, 199.0, 399.0)  # landmark box of point centres: w 99, h 199
    left, top, right, bottom = crop_box_from_box(box, (1000, 1000), SEED_CROP)
    assert (left, right) == pytest.approx((100.5 - 0.05 * 99, 199.5 + 0.05 * 99))
    assert (top, bottom) == pytest.approx((200.5 - 0.3 * 199, 399.5 + 0.05 * 199))


def test_clip_to_image_and_padding_rule():
    box = (1.0, 5.0, 50.0, 60.0)
    clipped = crop_box_from_box(box, (52, 62), SEED_CROP)
    assert clipped == (0.0, 0.0, 52.0, 62.0)
    padded = crop_box_from_box(box, None, CropRule(clip=False))
    assert padded[0] < 0 and padded[1] < 0
    with pytest.raises(ValueError, match="image_size"):
        crop_box_from_box(box, None, SEED_CROP)
    with pytest.raises(ValueError, match="empty"):
        crop_box_from_box((5, 5, 5, 9), (10, 10))


def test_round_trip_is_exact():
    rng = np.random.default_rng(1)
    points = rng.uniform(50, 300, size=(68, 2)).astype(np.float32)
    crop_box = crop_box_from_box(box_from_points(points), (400, 400))
    normalised = to_crop(points, crop_box)
    assert normalised.min() >= 0 and normalised.max() <= 1
    assert np.abs(from_crop(normalised, crop_box) - points).max() < 0.01


def test_crop_image_matches_normalised_points():
    # a single bright pixel must land where to_crop says, after crop + resize
    image = np.zeros((300, 200, 3), np.uint8)
    image[150, 80] = 255
    crop_box = (40.0, 100.0, 140.0, 250.0)
    crop = crop_image(image, crop_box, 128)
    expected = to_crop(np.array([[80.0, 150.0]]), crop_box)[0] * 128 - 0.5
    found = np.array(np.unravel_index(crop[..., 0].astype(float).argmax(), crop.shape[:2]))[::-1]
    assert np.abs(found - expected).max() <= 1.0
    assert np.allclose(apply_affine(crop_affine(crop_box, 128), [[80.0, 150.0]])[0], expected, atol=1e-4)


def test_rotate_face_moves_pixels_and_points_together():
    image = np.zeros((200, 240, 3), np.uint8)
    image[60, 150] = 255
    points = np.array([[150.0, 60.0], [100.0, 100.0], [130.0, 140.0]])
    out, moved, matrix = rotate_face(image, points, 35.0)
    assert out.shape == image.shape
    found = np.array(np.unravel_index(out[..., 0].astype(float).argmax(), out.shape[:2]))[::-1]
    assert np.abs(found - moved[0]).max() <= 1.0
    # rigid: distances kept; the box centre stays put; angle 0 is the identity
    assert np.allclose(np.linalg.norm(moved[1:] - moved[0], axis=1), np.linalg.norm(points[1:] - points[0], axis=1))
    assert not np.allclose(moved, points) and np.allclose(apply_affine(matrix, points), moved, atol=1e-4)
    same, unmoved, _ = rotate_face(image, points, 0.0)
    assert np.array_equal(same, image) and np.allclose(unmoved, points)


def test_turned_box_is_centred_on_its_turn():
    """A box and a roll fix the turn: turned about the box's centre by the roll, the points'
    tight box is the box."""
    rng = np.random.default_rng(1)
    points = rng.uniform(50, 150, size=(68, 2))
    for roll in (-70.0, 25.0, 90.0):
        box = turned_box(points, roll)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        turn = upright_turn(centre, roll)
        assert np.allclose(box, box_from_points(apply_affine(turn, points)), atol=1e-4)
        assert np.allclose(apply_affine(turn, [centre])[0], centre, atol=1e-4)  # the centre is fixed

"""The 5-point scheme: 68 -> 5 conversion, converted and merged stores, a tiny 5-point training run,
and the shipped ``default-5`` model on the detector path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facemark.cli import main
from facemark.data.prepare import prepare
from facemark.data.store import Store
from facemark.metrics import describe
from facemark.schemes import FIVE_FROM_68_BOX, five_from_68_box, get_scheme, to_five

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def test_to_five_takes_eye_means_nose_tip_and_mouth_corners():
    points = RNG.uniform(0, 100, (3, 68, 2)).astype(np.float32)
    five = to_five(points)
    assert five.shape == (3, 5, 2) and five.dtype == np.float32
    np.testing.assert_allclose(five[:, 0], points[:, 36:42].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(five[:, 1], points[:, 42:48].mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(five[:, 2:], points[:, [30, 48, 54]])
    np.testing.assert_array_equal(to_five(five), five)  # five points stay as they are


def test_five_scheme_flip_is_an_involution_and_commutes_with_the_conversion():
    scheme5, scheme68 = get_scheme(5), get_scheme(68)
    perm = np.array(scheme5.flip_perm)
    assert (perm[perm] == np.arange(5)).all() and tuple(perm) == (1, 0, 2, 4, 3)
    points = RNG.uniform(0, 100, (68, 2)).astype(np.float32)
    np.testing.assert_allclose(to_five(scheme68.flip(points, 120)), scheme5.flip(to_five(points), 120), atol=1e-4)
    assert describe("inter_ocular", scheme5) == "NME normalised by the eye-centre distance (points 0, 1)"


def test_five_box_from_68_box_is_the_fitted_fraction():
    assert five_from_68_box((10, 20, 110, 220)) == pytest.approx(
        (10 + 100 * FIVE_FROM_68_BOX[0], 20 + 200 * FIVE_FROM_68_BOX[1],
         10 + 100 * FIVE_FROM_68_BOX[2], 20 + 200 * FIVE_FROM_68_BOX[3]))


def test_convert_to_5pt_and_merge_then_train_a_tiny_5_point_model(synthetic_dataset, tmp_path, capsys):
    prepare(synthetic_dataset, tmp_path / "d68", size=64, progress=False)
    assert main(["data", "convert", str(tmp_path / "d68"), "--to", "5pt", "--out", str(tmp_path / "d5"), "--size", "48"]) == 0
    for split in ("train", "val"):
        src, dst = Store.open(tmp_path / "d68" / split), Store.open(tmp_path / "d5" / split)
        assert dst.num_points == 5 and dst.images.shape[1:] == (48, 48, 3) and len(dst) == len(src)
        np.testing.assert_array_equal(dst.points, to_five(np.asarray(src.points)))
        assert [s["region"] for s in dst.samples] == [s["region"] for s in src.samples]
    # merging: two 5-point folders into one; a 68-point store with a 5-point one is refused
    assert main(["data", "convert", str(tmp_path / "d5"), str(tmp_path / "d5"), "--out", str(tmp_path / "both")]) == 0
    assert len(Store.open(tmp_path / "both" / "train")) == 2 * len(Store.open(tmp_path / "d5" / "train"))
    assert main(["data", "convert", str(tmp_path / "d5" / "val"), str(tmp_path / "d68" / "val"), "--out", str(tmp_path / "x")]) != 0
    assert "different point counts [5, 68]" in capsys.readouterr().err and not (tmp_path / "x").exists()

    from facemark.api import Landmarker
    from facemark.config import load_config
    from facemark.train import train

    config = tmp_path / "five.yaml"
    config.write_text(json.dumps({
        "data": str(tmp_path / "d5"), "out": str(tmp_path / "run"), "model": "pipnet_resnet",
        "model_args": {"width": 0.25, "num_nb": 4}, "input_size": 64, "crop": {"top": 0.9, "bottom": 0.7, "side": 0.65,
                                                                              "clip": False},
        "batch_size": 8, "steps": 4, "val_every": 4, "ckpt_every": 4, "num_threads": 1, "channels_last": True,
    }))
    train(load_config(config))
    lm = Landmarker(tmp_path / "run" / "best.pt", detector="haar:default")
    assert lm.spec.scheme == "5" and lm.num_points == 5
    image = np.full((120, 120, 3), 128, np.uint8)
    faces = lm.detect(image, boxes=[(20, 20, 100, 100)])  # a 68-point-style box, mapped to the five points' box
    assert faces[0].points.shape == (5, 2) and np.isfinite(faces[0].points).all()


SHIPPED = REPO / "facemark" / "assets" / "models" / "default-5.onnx"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="default-5 model not shipped")
def test_shipped_default_5_on_the_detector_path():
    from facemark.api import Landmarker

    lm, lm68 = Landmarker("default-5"), Landmarker("default")
    assert lm.spec.scheme == "5" and lm.spec == Landmarker("default-5", backend="torch").spec
    assert SHIPPED.stat().st_size < 5e6 and SHIPPED.with_suffix(".pt").stat().st_size < 5e6
    image = str(REPO / "facemark" / "assets" / "astronaut.jpg")
    faces, faces68 = lm.detect(image), lm68.detect(image)
    assert len(faces) == len(faces68) == 1 and faces[0].points.shape == (5, 2)
    # calibrated confidence (bench.fit_quality --model default-5): a well-placed face scores high
    assert faces[0].point_scores.shape == (5,) and faces[0].quality > 0.9
    expected = to_five(faces68[0].points)
    eyes = np.linalg.norm(expected[0] - expected[1])
    assert np.linalg.norm(faces[0].points - expected, axis=1).mean() / eyes < 0.1


@pytest.mark.skipif(not SHIPPED.is_file(), reason="default-5 model not shipped")
def test_default_5_gives_the_pose_of_default_on_real_faces(lite_root):
    """Head pose from the five points (their scheme file's pose list: eye centres as the means of
    the 68's eye points) against the 68-point model's, on the same real faces and boxes."""
    from facemark.api import Landmarker
    from facemark.data.formats import read_pts
    from facemark.geometry import box_from_points

    lm, lm68 = Landmarker("default-5"), Landmarker("default")
    diffs = []
    for pts in sorted(lite_root.rglob("*.pts"))[::50]:
        image, box = next(pts.parent.glob(pts.stem + ".*g")), box_from_points(read_pts(pts))
        [face], [face68] = lm.detect(image, boxes=[box], pose=True), lm68.detect(image, boxes=[box], pose=True)
        assert face.pose_reason is None
        diffs.append(np.subtract(face.pose, face68.pose))
    diffs = np.abs(diffs)  # (faces, yaw/pitch/roll)
    median, worst = np.median(diffs, axis=0), diffs.max(axis=0)
    assert len(diffs) > 30 and (median < [3, 6, 2]).all() and (worst < [20, 25, 10]).all(), (median, worst)

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

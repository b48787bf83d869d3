"""facemark.calibrate: the functions that fit the shipped constants give the values the package ships."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED

from facemark.calibrate import fit_five_box, fit_mean_face, fit_quality, measure_quality
from facemark.data.faces import load_faces
from facemark.images import image_size
from facemark.pose import MEAN_FACE_FILE
from facemark.quality import GOOD_NME
from facemark.schemes import FIVE_FROM_68_BOX

AFLW3D = SHARED / "data" / "format-samples" / "aflw2000-3d"


@pytest.fixture(scope="module")
def training_faces(lite_root):
    """The 300w-lite training split (the fixed split), which the shipped constants were fitted on."""
    return load_faces(lite_root, "train")[0]


def test_five_from_68_box_is_what_fit_five_box_gives(training_faces):
    fit = fit_five_box(np.stack([f.points for f in training_faces]))
    assert len(training_faces) == 1621
    assert fit["five_from_68_box"] == pytest.approx(FIVE_FROM_68_BOX, abs=5e-5)  # schemes.py keeps 4 decimals


def test_the_mean_face_is_what_fit_mean_face_gives(training_faces):
    scipy_io = pytest.importorskip("scipy.io")
    files = sorted(AFLW3D.glob("*.mat"))
    if not files:
        pytest.skip(f"{AFLW3D} is missing")
    shapes = [scipy_io.loadmat(f)["pt3d_68"].T.astype(np.float64) * [1.0, 1.0, -1.0] for f in files]
    faces = [(np.asarray(f.points, np.float64), image_size(f.image_path)) for f in training_faces]
    shipped = np.array(json.loads(MEAN_FACE_FILE.read_text())["points"])
    np.testing.assert_allclose(np.round(fit_mean_face(shapes, faces), 2), shipped, atol=0.011)  # written to 2 decimals


def test_fit_quality_ranks_bad_fits_below_good_ones():
    """On predictions whose point features tell their error (a low score-map peak, a wide neighbour
    spread: a bad point), the out-of-fold quality separates the fits above 8 % from the rest."""
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    n, k = 400, 68
    badness = rng.uniform(0, 1, (n, 1))  # per prediction
    point_error = np.clip(0.02 + 0.12 * badness + rng.normal(0, 0.01, (n, k)), 0.001, None)
    raw = np.stack([np.exp(-3 * point_error / 0.1) + rng.normal(0, 0.02, (n, k)),  # peak
                    point_error * 0.5 + rng.uniform(0, 0.005, (n, k)),  # neighbour spread
                    point_error * 0.3 + rng.uniform(0, 0.005, (n, k))], axis=-1)  # flip spread
    d = {"raw": raw, "point_error": point_error, "face": np.arange(n), "jittered": np.zeros(n, bool),
         "detector_score": np.ones(n)}
    figures = measure_quality(d)
    assert figures["bad"] == int((point_error.mean(1) > GOOD_NME).sum()) > 50
    assert figures["auroc"] > 0.95 and figures["point_auroc"] > 0.9 and figures["auroc_10"] > 0.9
    calibration = fit_quality(raw, point_error, note="synthetic")
    assert calibration.flip_test is True
    good, bad = np.argmin(badness), np.argmax(badness)
    assert calibration.quality(raw[[good]])[0] > 0.9 > 0.1 > calibration.quality(raw[[bad]])[0]
    assert calibration.to_dict()["note"] == "synthetic"


def test_fit_quality_of_a_one_pass_model_gives_the_flip_spread_no_weight():
    """Without the flip test the third feature is missing (NaN, as ``Landmarker`` gives it): the fit
    still separates good fits from bad ones on the other two, says it was fitted without the flip
    test, and puts no weight on the missing feature (so a stray flip spread cannot move the score);
    the out-of-fold figures leave the missing feature's own row out."""
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(1)
    n, k = 300, 68
    badness = rng.uniform(0, 1, (n, 1))
    point_error = np.clip(0.02 + 0.12 * badness + rng.normal(0, 0.01, (n, k)), 0.001, None)
    raw = np.stack([np.exp(-3 * point_error / 0.1) + rng.normal(0, 0.02, (n, k)),
                    point_error * 0.5 + rng.uniform(0, 0.005, (n, k)), np.full((n, k), np.nan)], axis=-1)
    calibration = fit_quality(raw, point_error)
    assert calibration.flip_test is False and calibration.to_dict()["flip_test"] is False
    assert calibration.point.coef[2] == 0.0
    good, bad = np.argmin(badness), np.argmax(badness)
    assert calibration.quality(raw[[good]])[0] > 0.9 > 0.1 > calibration.quality(raw[[bad]])[0]
    assert calibration.quality(np.concatenate([raw[[good]][..., :2], np.full((1, k, 1), 5.0)], -1))[0] == \
        pytest.approx(calibration.quality(raw[[good]])[0])
    d = {"raw": raw, "point_error": point_error, "face": np.arange(n), "jittered": np.zeros(n, bool),
         "detector_score": np.ones(n)}
    figures = measure_quality(d)
    assert figures["auroc"] > 0.95 and "mean flip spread" not in figures["auroc_single"]

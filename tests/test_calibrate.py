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
    assert figures["auroc"] > 0.95 and figures["point_auroc"] > 0.9
    calibration = fit_quality(raw, point_error, note="synthetic")
    good, bad = np.argmin(badness), np.argmax(badness)
    assert calibration.quality(raw[[good]])[0] > 0.9 > 0.1 > calibration.quality(raw[[bad]])[0]
    assert calibration.to_dict()["note"] == "synthetic"

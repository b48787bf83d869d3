"""Every registered model: shapes, decode, parameter count, ONNX export parity, backward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facemark.checkpoint import checkpoint_state, save_checkpoint
from facemark.export import export_onnx
from facemark.geometry import CropRule
from facemark.losses import LOSSES, get_loss
from facemark.models import create_model, list_models, register_model

MODELS = list_models()


def make_model(name: str, num_points: int = 68) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_points)
    if hasattr(model, "set_mean_shape"):
        model.set_mean_shape(torch.rand(num_points, 2, generator=torch.Generator().manual_seed(1)))
    return model


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Give BatchNorm running stats from one batch, so eval-mode outputs are not degenerate."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, the batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def test_registry():
    """The registry lists every model once, in order, and an unknown name is an error naming it and every known one."""
    assert {"seed_senet", "pipnet_mbv2", "pipnet_resnet", "reg_mbv2", "reg_resnet"} <= set(MODELS)
    assert MODELS == sorted(set(MODELS))
    with pytest.raises(ValueError) as err:
        create_model("no_such_model")
    assert str(err.value) == f"unknown model 'no_such_model'; known models: {MODELS}"
    def seed_senet(num_points: int = 68):  # a second model under a taken name
        return nn.Identity()

    with pytest.raises(ValueError, match="'seed_senet' is already registered"):
        register_model(seed_senet)
    assert not isinstance(create_model("seed_senet", input_size=64), nn.Identity)  # the first one stays
    assert list_models() == MODELS  # the refused registration changed nothing


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_points", [68, 98])
def test_forward_and_decode_shapes(name, num_points):
    model = make_model(name, num_points)
    assert model.num_points == num_points and model.input_size == 128
    assert model.mean.shape == (1, 3, 1, 1)
    assert model.default_loss in LOSSES
    x = torch.rand(2, 3, 128, 128)
    raw = model(x)
    if torch.is_tensor(raw):
        assert raw.shape == (2, num_points, 2)
    else:
        h = w = model.map_size
        assert raw["score"].shape == (2, num_points, h, w)
        assert raw["offset_x"].shape == raw["offset_y"].shape == (2, num_points, h, w)
        assert raw["nb_x"].shape == raw["nb_y"].shape == (2, num_points * model.num_nb, h, w)
    points = model.decode(raw)
    assert points.shape == (2, num_points, 2) and torch.isfinite(points).all()


def seed_senet_param_count(num_points: int) -> int:
    """The recipe's architecture counted by hand (convs without bias, BN 2C, linears with bias)."""
    total = 3 * 32 * 9 + 2 * 32  # stem conv + BN
    c_in = 32
    for c in (64, 128, 128, 256, 512):
        mid = c // 4
        total += c_in * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * c + 2 * c  # bottleneck
        total += (c * (c // 16) + c // 16) + (c // 16 * c + c)  # squeeze-excite FCs
        if c_in != c:
            total += c_in * c + 2 * c  # pooled shortcut's 1x1 conv + BN
        c_in = c
    return total + (512 * 1024 + 1024) + (1024 * 2 * num_points + 2 * num_points)


def test_param_counts():
    counts = {name: sum(p.numel() for p in make_model(name).parameters()) for name in MODELS}
    print("\nparameters (68 points, input 128):", counts)
    assert counts["seed_senet"] == seed_senet_param_count(68) == 1_235_436
    for name, n in counts.items():
        assert 0.5e6 < n < 15e6, (name, n)


@pytest.mark.parametrize("name", MODELS)
def test_backward_with_default_loss(name):
    model = make_model(name).train()
    x = torch.rand(2, 3, 128, 128)
    target = torch.rand(2, 68, 2) * 0.8 + 0.1
    loss = get_loss(model.default_loss)(model, model(x), target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_parity(name, tmp_path):
    """The real export (:func:`facemark.export.export_onnx`: BN folded, metadata) of a checkpoint of every model."""
    ort = pytest.importorskip("onnxruntime")
    model = make_model(name)
    calibrate_bn(model, torch.rand(2, 3, 128, 128))
    checkpoint = tmp_path / f"{name}.pt"
    save_checkpoint(checkpoint_state(model, name, {"num_points": 68, "input_size": 128}, CropRule(clip=False)), checkpoint)
    path = export_onnx(checkpoint, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))  # batch 3: dynamic axis
    with torch.no_grad():
        expected = model.eval().predict_points(x).numpy()
    (got,) = session.run(["points"], {"image": x.numpy()})  # PIPNet models add "point_features"
    assert got.shape == (3, 68, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

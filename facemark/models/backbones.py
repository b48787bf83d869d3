"""Light backbones in plain torch, and the direct-regression models built on them.

* :class:`MobileNetV2` (Sandler et al. 2018): inverted residuals, width multiplier, a last 1x1
  conv to ``last_channels``;
* :class:`ResNet` (He et al. 2016): ResNet-18 layout by default, base width ``64 * width``.

Both take ``out_stride`` (8, 16 or 32) and stop once the feature map reaches that stride, so the
PIPNet head (:mod:`facemark.models.pipnet`) can sit on a stride-16 map (8 x 8 for a 128 input).
Each has ``out_channels``. Neither is pretrained; they start from Kaiming-normal (fan-out) convs.

The regression family (:class:`BackboneRegressor`, ``reg_mbv2`` / ``reg_resnet``) puts a global
mean and an FC to ``2K`` on a stride-32 backbone and trains with the wing loss by default.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import LandmarkModel, register_model


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_act(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def init_backbone(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_stride(out_stride: int) -> None:
    if out_stride not in (8, 16, 32):
        raise ValueError(f"out_stride must be 8, 16 or 32, got {out_stride}")


# --------------------------------------------------------------------------------------------
# MobileNetV2


class InvertedResidual(nn.Module):
    """1x1 expand (x t) -> 3x3 depthwise (stride s) -> 1x1 linear project; residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(c_in, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn_act(hidden, c_out, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion t, channels c, repeats n, first stride s), as in the paper's Table 2
    SETTINGS = (
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),  # strides 2, 4, 8, 16
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),  # strides 16, 32, 32
    )

    def __init__(self, width: float = 1.0, out_stride: int = 32, last_channels: int | None = 1280):
        super().__init__()
        _check_stride(out_stride)
        c_in = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_act(3, c_in, 3, 2, act=nn.ReLU6)]  # stride 2
        stride = 2
        for t, c, n, s in self.SETTINGS:
            if stride * s > out_stride:
                break
            stride *= s
            c_out = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        if last_channels:
            # the classifier's 1x1 expansion, kept as the feature layer (as PIPNet's MobileNetV2 does)
            last = make_divisible(last_channels * max(1.0, width))
            layers.append(conv_bn_act(c_in, last, 1, act=nn.ReLU6))
            c_in = last
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        self.out_stride = out_stride
        init_backbone(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, out_channels, H / out_stride, W / out_stride)


# --------------------------------------------------------------------------------------------
# ResNet


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn_act(c_in, c_out, 3, stride)
        self.conv2 = conv_bn_act(c_out, c_out, 3, act=None)
        self.shortcut = (
            conv_bn_act(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


#: blocks per stage of ResNet-18
RESNET18_LAYERS = (2, 2, 2, 2)


class ResNet(nn.Module):
    """ResNet with basic blocks; ``layers=(2, 2, 2, 2)`` and ``width=1`` is ResNet-18."""

    def __init__(self, width: float = 1.0, layers: tuple[int, ...] = RESNET18_LAYERS, out_stride: int = 32):
        super().__init__()
        _check_stride(out_stride)
        layers = tuple(layers)
        if not layers or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers):
            raise ValueError(f"layers = {list(layers)!r}: expected blocks per stage, each a whole number >= 1")
        c_in = make_divisible(64 * width)
        modules: list[nn.Module] = [
            conv_bn_act(3, c_in, 7, 2),
            nn.MaxPool2d(3, 2, 1),
        ]  # stride 4
        for (i, _block), stride in self.blocks(layers, out_stride).items():
            c_out = make_divisible(64 * width * 2**i)
            modules.append(BasicBlock(c_in, c_out, stride))
            c_in = c_out
        self.features = nn.Sequential(*modules)
        self.layers = layers
        self.out_channels = c_in
        self.out_stride = out_stride
        init_backbone(self)

    @staticmethod
    def blocks(layers: tuple[int, ...], out_stride: int) -> dict[tuple[int, int], int]:
        """``{(stage, block): stride}`` of the blocks kept up to ``out_stride``, in ``features`` order
        (they follow the stem and the max-pool, so block n is ``features.{n + 2}``)."""
        kept, stride = {}, 4
        for i, n in enumerate(layers):
            s = 1 if i == 0 else 2
            if stride * s > out_stride:
                break
            stride *= s
            kept.update({(i, j): s if j == 0 else 1 for j in range(n)})
        return kept

    def renames_from(self, source_layers: tuple[int, ...] | None) -> dict[str, str]:
        """``{own prefix: source prefix}`` for the blocks of a ResNet built with ``source_layers``:
        block j of stage i takes the source's block j of stage i, so a shallower copy (fewer blocks
        per stage: the later, non-strided blocks dropped) starts from a deeper network's weights."""
        own = list(self.blocks(self.layers, self.out_stride))
        source_layers = RESNET18_LAYERS if source_layers is None else tuple(source_layers)
        source = {key: n for n, key in enumerate(self.blocks(source_layers, self.out_stride))}
        return {f"features.{n + 2}.": f"features.{source[key] + 2}." for n, key in enumerate(own)
                if key in source and source[key] != n}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, out_channels, H / out_stride, W / out_stride)


#: backbone name -> (class, the constructor arguments that are the backbone's own)
BACKBONES: dict[str, tuple[type, tuple[str, ...]]] = {"mbv2": (MobileNetV2, ("last_channels",)), "resnet": (ResNet, ("layers",))}


def backbone_from_args(name: str, width: float, out_stride: int, model_kw: dict) -> nn.Module:
    """The backbone of a model constructor: ``width`` and ``out_stride``, and its own keys taken out of
    ``model_kw`` (the rest goes to the head); the one place the four constructors share."""
    cls, own = BACKBONES[name]
    return cls(width=width, out_stride=out_stride, **{k: model_kw.pop(k) for k in own if k in model_kw})


# --------------------------------------------------------------------------------------------
# Direct regression on a backbone


class BackboneRegressor(LandmarkModel):
    """Backbone -> global mean -> (dropout) -> FC 2K -> ``(B, K, 2)`` normalised points."""

    default_loss = "wing"

    def __init__(
        self,
        backbone: nn.Module,
        num_points: int = 68,
        input_size: int = 128,
        dropout: float = 0.0,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ):
        super().__init__(num_points, input_size, mean)
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels, 2 * num_points)
        # small weights and a 0.5 bias: predictions start at the crop centre
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.constant_(self.fc.bias, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(self.normalise(x)).mean(dim=(2, 3))  # (B, C)
        return self.fc(self.dropout(f)).view(-1, self.num_points, 2)  # (B, K, 2)


@register_model
def reg_mbv2(num_points: int = 68, input_size: int = 128, width: float = 1.0, stride: int = 32, **kw):
    """MobileNetV2 + FC regression (wing loss by default)."""
    backbone = backbone_from_args("mbv2", width, stride, kw)
    return BackboneRegressor(backbone, num_points=num_points, input_size=input_size, **kw)


@register_model
def reg_resnet(num_points: int = 68, input_size: int = 128, width: float = 1.0, stride: int = 32, **kw):
    """ResNet-18-like + FC regression (wing loss by default)."""
    backbone = backbone_from_args("resnet", width, stride, kw)
    return BackboneRegressor(backbone, num_points=num_points, input_size=input_size, **kw)

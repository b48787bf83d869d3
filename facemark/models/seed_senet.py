"""The seed recipe's SE-ResNet that regresses the point coordinates directly.

Layout for a 128 x 128 input (shapes without the batch axis)::

    conv3x3 3->32, BN, ReLU              32 x 128 x 128
    avgpool 3x3 / 2 (pad 1)              32 x  64 x  64
    SE bottleneck  32 -> 64,  stride 2   64 x  32 x  32
    SE bottleneck  64 -> 128, stride 2  128 x  16 x  16
    SE bottleneck 128 -> 128, stride 2  128 x   8 x   8
    SE bottleneck 128 -> 256, stride 2  256 x   4 x   4
    SE bottleneck 256 -> 512, stride 2  512 x   2 x   2
    mean over H, W                      512
    FC 1024, Dropout(0.2), ReLU         1024
    FC 2K -> reshape                    K x 2   (normalised crop coordinates, no sigmoid)

Initialisation is variance scaling (Kaiming-normal, fan-in, ReLU gain) for every conv and linear
layer with zero biases, except the last bias, which is 0.5 so that predictions start near the crop
centre. With the recipe's Kaiming last layer the initial predictions still spread widely about
0.5 (standard deviation ~0.4-0.8 in train mode); ``head_std=1e-3`` starts them all at the centre.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import conv_bn_act
from .registry import LandmarkModel, register_model


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> FC C/r -> ReLU -> FC C -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class SEBottleneck(nn.Module):
    """1x1 (C/4) -> 3x3 stride s (C/4) -> 1x1 (C), SE on the output, pooled shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        mid = c_out // 4
        self.body = nn.Sequential(
            conv_bn_act(c_in, mid, 1),
            conv_bn_act(mid, mid, 3, stride),
            conv_bn_act(mid, c_out, 1, act=None),
        )
        self.se = SqueezeExcite(c_out)
        shortcut: list[nn.Module] = []
        if stride > 1:
            # ceil_mode matches the 3x3/stride-2/pad-1 body on odd sizes: both give ceil(H / 2)
            shortcut.append(nn.AvgPool2d(stride, stride, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(conv_bn_act(c_in, c_out, 1, act=None))
        self.shortcut = nn.Sequential(*shortcut)  # empty Sequential is the identity
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.se(self.body(x)) + self.shortcut(x))


class SeedSENet(LandmarkModel):
    """SE-ResNet regression of ``(B, K, 2)`` normalised points; see the module docstring."""

    default_loss = "l2"

    def __init__(
        self,
        num_points: int = 68,
        input_size: int = 128,
        stem_channels: int = 32,
        channels: tuple[int, ...] = (64, 128, 128, 256, 512),
        fc_channels: int = 1024,
        dropout: float = 0.2,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        head_std: float | None = None,
    ):
        super().__init__(num_points, input_size, mean)
        self.stem = nn.Sequential(
            conv_bn_act(3, stem_channels, 3),
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        )
        blocks, c_in = [], stem_channels
        for c_out in channels:
            blocks.append(SEBottleneck(c_in, c_out, stride=2))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(c_in, fc_channels)
        self.dropout = nn.Dropout(dropout)  # the recipe's keep probability 0.8
        self.fc2 = nn.Linear(fc_channels, 2 * num_points)
        self._init_weights(head_std)

    def _init_weights(self, head_std: float | None) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if head_std is not None:  # optional: small last weights, so every start is at the centre
            nn.init.normal_(self.fc2.weight, std=head_std)
        nn.init.constant_(self.fc2.bias, 0.5)  # start at the crop centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.normalise(x)))  # (B, 512, H/64, W/64)
        x = x.mean(dim=(2, 3))  # (B, 512)
        x = torch.relu(self.dropout(self.fc1(x)))  # (B, 1024)
        return self.fc2(x).view(-1, self.num_points, 2)  # (B, K, 2)


@register_model
def seed_senet(num_points: int = 68, input_size: int = 128, **kw) -> SeedSENet:
    """The seed recipe: SE-ResNet, L2 regression of normalised coordinates."""
    return SeedSENet(num_points=num_points, input_size=input_size, **kw)

"""PIPNet-style heads (Pixel-in-Pixel Net, Jin et al. 2021) on the light backbones.

The backbone gives an ``h x w`` feature map at stride ``s`` (default: the stride that makes the map
8 x 8, i.e. 16 for a 128 input and 32 for a 256 input, PIPNet's 256 / 32). Five 1x1 conv heads
predict, for every cell and point ``k``:

* ``score``    ``(B, K, h, w)``      is point ``k`` in this cell (trained towards a one-hot map);
* ``offset_x`` / ``offset_y`` ``(B, K, h, w)`` the point's position inside the cell, in cell units
  from the cell's top-left corner (0..1 when the point is inside the cell);
* ``nb_x`` / ``nb_y`` ``(B, K * num_nb, h, w)`` channel ``k * num_nb + m``: where neighbour ``m`` of
  point ``k`` lies, in cell units from the top-left corner of point ``k``'s cell.

Decoding takes the arg-max cell of each score map, adds the offsets, and then (PIPNet's
neighbour regression module) averages each point's own estimate with every estimate of it that its
"reverse neighbours" made. The neighbour table comes from a mean shape
(:meth:`PIPNet.set_mean_shape`): ``nb_index[k]`` are the ``num_nb`` points nearest to ``k``;
``nb_merge`` is the reverse mapping as a dense ``(K, K * num_nb)`` 0/1 matrix
(``nb_merge[i, k * num_nb + m] = 1`` iff ``nb_index[k, m] == i``), so the averaging is one matmul:
fixed shapes, traceable, and a plain mean over the real predictors (PIPNet's code pads the reverse
lists by repetition instead, which counts some neighbours twice).

All normalised coordinates follow :mod:`facemark.geometry`: cell ``j`` of ``w`` covers
``[j / w, (j + 1) / w]``, so a point is ``(col + offset) / w``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .backbones import backbone_from_args
from .registry import LandmarkModel, register_model


class PIPNet(LandmarkModel):
    default_loss = "pipnet"

    def __init__(
        self,
        backbone: nn.Module,
        num_points: int = 68,
        input_size: int = 128,
        num_nb: int = 10,
        mean_shape=None,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ):
        super().__init__(num_points, input_size, mean)
        if num_points < 2:
            raise ValueError("PIPNet needs at least 2 points (neighbours)")
        stride = backbone.out_stride
        if input_size % stride:
            raise ValueError(f"input_size {input_size} is not a multiple of the net stride {stride}")
        self.backbone = backbone
        self.net_stride = stride
        self.map_size = input_size // stride
        self.num_nb = min(int(num_nb), num_points - 1)
        c, k, nb = backbone.out_channels, num_points, self.num_nb
        self.score = nn.Conv2d(c, k, 1)
        self.offset_x = nn.Conv2d(c, k, 1)
        self.offset_y = nn.Conv2d(c, k, 1)
        self.nb_x = nn.Conv2d(c, k * nb, 1)
        self.nb_y = nn.Conv2d(c, k * nb, 1)
        for head in (self.score, self.offset_x, self.offset_y, self.nb_x, self.nb_y):
            nn.init.normal_(head.weight, std=0.001)  # PIPNet's head init
            nn.init.zeros_(head.bias)
        # Neighbour tables (filled by set_mean_shape; saved with the weights).
        self.register_buffer("mean_shape", torch.zeros(k, 2))
        self.register_buffer("nb_index", torch.zeros(k, nb, dtype=torch.long))
        self.register_buffer("nb_merge", torch.zeros(k, k * nb))
        if mean_shape is not None:
            self.set_mean_shape(mean_shape)

    # ---------------------------------------------------------------------------------------
    # neighbour tables

    @property
    def has_mean_shape(self) -> bool:
        return bool(self.nb_merge.sum() > 0)

    def set_mean_shape(self, mean_shape) -> None:
        """Build ``nb_index`` / ``nb_merge`` from a ``(K, 2)`` mean shape in normalised coordinates."""
        shape = torch.as_tensor(np.asarray(mean_shape, dtype=np.float32))
        k, nb = self.num_points, self.num_nb
        if shape.shape != (k, 2):
            raise ValueError(f"mean shape must be ({k}, 2), got {tuple(shape.shape)}")
        dist = torch.cdist(shape[None].double(), shape[None].double())[0]  # (K, K)
        dist.fill_diagonal_(float("inf"))  # a point is not its own neighbour
        nb_index = dist.argsort(dim=1, stable=True)[:, :nb]  # (K, nb)
        merge = torch.zeros(k, k * nb)
        rows = nb_index.reshape(-1)  # entry k * nb + m predicts point nb_index[k, m]
        merge[rows, torch.arange(k * nb)] = 1.0
        self.mean_shape.copy_(shape)
        self.nb_index.copy_(nb_index)
        self.nb_merge.copy_(merge)

    # ---------------------------------------------------------------------------------------
    # forward, decode, targets

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(self.normalise(x))  # (B, C, h, w)
        return {
            "score": self.score(f),  # (B, K, h, w)
            "offset_x": self.offset_x(f),  # (B, K, h, w)
            "offset_y": self.offset_y(f),
            "nb_x": self.nb_x(f),  # (B, K * nb, h, w)
            "nb_y": self.nb_y(f),
        }

    def decode(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        """Arg-max cell + offsets, merged with the neighbours' estimates -> ``(B, K, 2)``."""
        return self.decode_with_features(raw)[0]

    def decode_with_features(self, raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode`'s points and, per point, the raw confidence features ``(B, K, 2)``:
        the score-map peak (trained towards 1 at the point's cell) and the distance, in normalised
        crop units, between the point's own estimate and the mean of its reverse neighbours'
        estimates of it (0 for a point no neighbour predicts). :mod:`facemark.quality` calibrates them."""
        k, nb = self.num_points, self.num_nb
        h, w = raw["score"].shape[-2:]
        peak = raw["score"].flatten(2).amax(dim=2)  # (B, K) the score-map peak
        idx = raw["score"].flatten(2).argmax(dim=2)  # (B, K) flat cell index (first max on ties)
        col = (idx % w).float()
        row = torch.div(idx, w, rounding_mode="floor").float()
        ox = raw["offset_x"].flatten(2).gather(2, idx[:, :, None])[:, :, 0]  # (B, K)
        oy = raw["offset_y"].flatten(2).gather(2, idx[:, :, None])[:, :, 0]
        own_x, own_y = (col + ox) / w, (row + oy) / h

        # each point's estimates of its neighbours, read at the point's own cell
        nb_idx = idx[:, :, None, None].expand(-1, -1, nb, 1)  # (B, K, nb, 1)
        nbx = raw["nb_x"].reshape(-1, k, nb, h * w).gather(3, nb_idx)[..., 0]  # (B, K, nb)
        nby = raw["nb_y"].reshape(-1, k, nb, h * w).gather(3, nb_idx)[..., 0]
        nb_px = ((col[:, :, None] + nbx) / w).reshape(-1, k * nb)  # (B, K * nb)
        nb_py = ((row[:, :, None] + nby) / h).reshape(-1, k * nb)

        # reverse-index averaging: own estimate + every neighbour's estimate of this point
        reverse = self.nb_merge.sum(dim=1)  # (K,) how many neighbours predict each point
        count = 1.0 + reverse
        sum_x, sum_y = nb_px @ self.nb_merge.t(), nb_py @ self.nb_merge.t()  # (B, K)
        x = (own_x + sum_x) / count  # (B, K)
        y = (own_y + sum_y) / count
        points = torch.stack([x, y], dim=-1)  # (B, K, 2)

        has_nb = reverse.clamp(max=1.0)  # (K,) 0 where no neighbour predicts the point
        spread = torch.sqrt((own_x - sum_x / reverse.clamp(min=1.0)) ** 2 + (own_y - sum_y / reverse.clamp(min=1.0)) ** 2)
        return points, torch.stack([peak, spread * has_nb], dim=-1)  # (B, K, 2), (B, K, 2)

    def predict_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode_with_features(forward(x))``: points ``(B, K, 2)`` and point features ``(B, K, 2)``."""
        return self.decode_with_features(self.forward(x))

    @torch.no_grad()
    def targets(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training targets for ``(B, K, 2)`` normalised points, keyed like :meth:`forward`'s output.

        ``score`` is one-hot at the cell holding each point (clamped to the map); the offset maps
        hold the offsets at that cell and zeros elsewhere; ``index`` ``(B, K)`` is the flat cell index
        where the losses read the offsets. ``decode(targets(p)) == p`` up to rounding.
        """
        if not self.has_mean_shape:
            raise RuntimeError("call model.set_mean_shape(mean_shape) before building PIPNet targets")
        points = points.float()
        b, k, nb, h, w = points.shape[0], self.num_points, self.num_nb, self.map_size, self.map_size
        px, py = points[..., 0] * w, points[..., 1] * h  # in cells, (B, K)
        col = px.floor().clamp(0, w - 1)
        row = py.floor().clamp(0, h - 1)
        idx = (row * w + col).long()  # (B, K)

        def one_cell(values: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, K, h, w)
            out = points.new_zeros(b, k, h * w)
            return out.scatter_(2, idx[:, :, None], values[:, :, None]).view(b, k, h, w)

        def nb_cell(values: torch.Tensor) -> torch.Tensor:  # (B, K, nb) -> (B, K * nb, h, w)
            out = points.new_zeros(b, k, nb, h * w)
            out.scatter_(3, idx[:, :, None, None].expand(-1, -1, nb, 1), values[..., None])
            return out.view(b, k * nb, h, w)

        nb_index = self.nb_index.to(points.device)
        return {
            "score": one_cell(torch.ones_like(px)),
            "offset_x": one_cell(px - col),
            "offset_y": one_cell(py - row),
            # neighbour m of point k, relative to the top-left corner of point k's cell
            "nb_x": nb_cell(px[:, nb_index] - col[:, :, None]),
            "nb_y": nb_cell(py[:, nb_index] - row[:, :, None]),
            "index": idx,
        }


def _default_stride(input_size: int, stride: int | None) -> int:
    """The stride that gives an 8 x 8 map (16 at 128, 32 at 256) unless one is given."""
    if stride is None:
        stride = input_size // 8
        if stride not in (8, 16, 32):
            raise ValueError(f"no default stride for input_size {input_size}: pass stride=8, 16 or 32")
    return stride


@register_model
def pipnet_mbv2(num_points: int = 68, input_size: int = 128, width: float = 1.0, num_nb: int = 10,
                stride: int | None = None, **kw) -> PIPNet:
    """PIPNet head on MobileNetV2 (features up to ``stride`` plus the 1x1 to 1280 channels)."""
    backbone = backbone_from_args("mbv2", width, _default_stride(input_size, stride), kw)
    return PIPNet(backbone, num_points=num_points, input_size=input_size, num_nb=num_nb, **kw)


@register_model
def pipnet_resnet(num_points: int = 68, input_size: int = 128, width: float = 1.0, num_nb: int = 10,
                  stride: int | None = None, **kw) -> PIPNet:
    """PIPNet head on a ResNet-18-like backbone cut at ``stride`` (layer3 at 16, layer4 at 32)."""
    backbone = backbone_from_args("resnet", width, _default_stride(input_size, stride), kw)
    return PIPNet(backbone, num_points=num_points, input_size=input_size, num_nb=num_nb, **kw)

"""Training losses, all with one signature: ``loss_fn(model, raw_output, target_points) -> scalar``.

``raw_output`` is ``model(x)``; ``target_points`` are ``(B, K, 2)`` normalised 0..1 crop
coordinates. Regression losses use the raw output as the points (regression models output points);
map losses build their targets with ``model.targets(points)``. Every model names its default in
``model.default_loss``. Units:

* ``l2`` (the seed recipe) and ``l1``: mean over the ``B * K * 2`` coordinates, normalised units;
* ``smooth_l1`` and ``wing``: on crop *pixels*, i.e. coordinates times ``model.input_size``, because
  their thresholds (``beta = 1`` px; wing ``w = 10``, ``eps = 2`` as in Feng et al. 2018, for crops
  of roughly this size) only mean something in pixels; mean over the coordinates;
* ``adaptive_wing`` (Wang et al. 2019) on heat maps, for models whose output has a ``heatmap`` (or
  PIPNet ``score``) map and whose ``targets()`` builds the matching target map;
* ``pipnet``: PIPNet's loss (Jin et al. 2021): MSE on the score maps (weight 10, PIPNet's
  ``cls_loss_weight``), L1 on the x/y offsets and on the neighbour offsets read at each point's
  target cell (weight 1 each, PIPNet's ``reg_loss_weight``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# functional forms (tensors in, scalar out)


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al. 2018): ``w ln(1 + |x|/eps)`` below ``w``, ``|x| - C`` above; mean."""
    x = (pred - target).abs()
    c = w - w * math.log(1.0 + w / eps)  # makes the two pieces meet at |x| = w
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


def adaptive_wing_loss(
    pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.1, omega: float = 14.0, eps: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Adaptive wing loss (Wang et al. 2019) on heat maps with targets in 0..1; mean over pixels.

    The paper's weighted loss map (weight 10 on the dilated foreground) is left out.
    """
    diff = (pred - target).abs()
    power = alpha - target  # (..) per-pixel exponent: sharper near the peak
    ratio = theta / eps
    a = omega / (1.0 + ratio**power) * power * ratio ** (power - 1.0) / eps
    c = theta * a - omega * torch.log1p(ratio**power)
    loss = torch.where(diff < theta, omega * torch.log1p((diff / eps) ** power), a * diff - c)
    return loss.mean()


def pipnet_loss(
    raw: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cls_weight: float = 10.0,
    reg_weight: float = 1.0, nb_weight: float = 1.0,
) -> torch.Tensor:
    """PIPNet: MSE over the whole score maps + L1 of offsets and neighbour offsets at the target cells."""
    k = raw["score"].shape[1]
    idx = targets["index"]  # (B, K) flat target cell
    loss = cls_weight * F.mse_loss(raw["score"], targets["score"])

    def at_cell(maps: torch.Tensor) -> torch.Tensor:  # (B, K * n, h, w) -> (B, K, n) at each point's cell
        b, c = maps.shape[:2]
        n = c // k
        flat = maps.reshape(b, k, n, -1)
        return flat.gather(3, idx[:, :, None, None].expand(-1, -1, n, 1))[..., 0]

    for name in ("offset_x", "offset_y"):
        loss = loss + reg_weight * F.l1_loss(at_cell(raw[name]), at_cell(targets[name]))
    for name in ("nb_x", "nb_y"):
        loss = loss + nb_weight * F.l1_loss(at_cell(raw[name]), at_cell(targets[name]))
    return loss


# ---------------------------------------------------------------------------------------------
# uniform wrappers: loss_fn(model, raw_output, target_points)


def _points(name: str, raw) -> torch.Tensor:
    if not torch.is_tensor(raw):
        raise ValueError(f"loss {name!r} needs a regression model (raw output of (B, K, 2) points)")
    return raw


def l2(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """The recipe: mean squared error of normalised coordinates."""
    return F.mse_loss(_points("l2", raw), target)


def l1(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(_points("l1", raw), target)


def smooth_l1(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 with ``beta = 1`` pixel of the crop."""
    size = float(model.input_size)
    return F.smooth_l1_loss(_points("smooth_l1", raw) * size, target * size, beta=1.0)


def wing(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Wing loss, ``w = 10``, ``eps = 2``, on crop pixels (coordinates times ``model.input_size``)."""
    size = float(model.input_size)
    return wing_loss(_points("wing", raw) * size, target * size)


def adaptive_wing(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Adaptive wing on the model's heat map (``heatmap`` or PIPNet's ``score``) vs ``model.targets``."""
    if not isinstance(raw, dict) or not hasattr(model, "targets"):
        raise ValueError("loss 'adaptive_wing' needs a heat-map model (dict output and model.targets)")
    key = "heatmap" if "heatmap" in raw else "score"
    return adaptive_wing_loss(raw[key], model.targets(target)[key])


def pipnet(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(raw, dict) or not hasattr(model, "targets"):
        raise ValueError("loss 'pipnet' needs a PIPNet model")
    return pipnet_loss(raw, model.targets(target))


LOSSES: dict[str, Callable[[nn.Module, object, torch.Tensor], torch.Tensor]] = {
    "l2": l2,
    "l1": l1,
    "smooth_l1": smooth_l1,
    "wing": wing,
    "adaptive_wing": adaptive_wing,
    "pipnet": pipnet,
}


def get_loss(name: str) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}") from None

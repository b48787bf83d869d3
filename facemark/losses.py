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

Partial labels: a missing target point (NaN, see :func:`facemark.data.record.missing_points`) is
masked out of every loss: the means run over the present points only (for PIPNet: score maps and
offsets of present points, neighbour offsets where both points are present), so a face with no
present point contributes nothing and a batch with none gives a zero loss. Fully labelled batches
take exactly the unmasked path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# functional forms (tensors in, scalar out)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` (broadcast to them) is True; the plain mean without a mask,
    zero (still differentiable) when nothing is selected. Unselected values must be finite."""
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values).to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _fill_missing(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(target with missing points replaced by the detached prediction, (B, K, 1) present mask)``;
    the mask is None when no point is missing. Filling (rather than masking NaN afterwards) keeps
    the gradient finite: NaN times a zero mask is still NaN."""
    missing = target.isnan().any(dim=-1, keepdim=True)
    if not missing.any():
        return target, None
    return torch.where(missing, pred.detach(), target), ~missing


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Wing loss (Feng et al. 2018): ``w ln(1 + |x|/eps)`` below ``w``, ``|x| - C`` above; mean
    (over the ``mask``-ed entries when given)."""
    x = (pred - target).abs()
    c = w - w * math.log(1.0 + w / eps)  # makes the two pieces meet at |x| = w
    return masked_mean(torch.where(x < w, w * torch.log1p(x / eps), x - c), mask)


def adaptive_wing_loss(
    pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.1, omega: float = 14.0, eps: float = 1.0,
    theta: float = 0.5, mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adaptive wing loss (Wang et al. 2019) on heat maps with targets in 0..1; mean over pixels
    (of the ``mask``-ed maps when given, e.g. ``(B, K, 1, 1)``).

    The paper's weighted loss map (weight 10 on the dilated foreground) is left out.
    """
    diff = (pred - target).abs()
    power = alpha - target  # (..) per-pixel exponent: sharper near the peak
    ratio = theta / eps
    a = omega / (1.0 + ratio**power) * power * ratio ** (power - 1.0) / eps
    c = theta * a - omega * torch.log1p(ratio**power)
    loss = torch.where(diff < theta, omega * torch.log1p((diff / eps) ** power), a * diff - c)
    return masked_mean(loss, mask)


def pipnet_loss(
    raw: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cls_weight: float = 10.0,
    reg_weight: float = 1.0, nb_weight: float = 1.0, present: torch.Tensor | None = None,
    nb_present: torch.Tensor | None = None,
) -> torch.Tensor:
    """PIPNet: MSE over the whole score maps + L1 of offsets and neighbour offsets at the target cells.

    ``present`` ``(B, K)`` and ``nb_present`` ``(B, K, nb)`` (partial labels) restrict the means to
    the maps and offsets of present points and to neighbour offsets between present points.
    """
    k = raw["score"].shape[1]
    idx = targets["index"]  # (B, K) flat target cell
    if present is None:
        loss = cls_weight * F.mse_loss(raw["score"], targets["score"])
    else:
        mse = (raw["score"] - targets["score"]) ** 2
        loss = cls_weight * masked_mean(mse, present[:, :, None, None])

    def at_cell(maps: torch.Tensor) -> torch.Tensor:  # (B, K * n, h, w) -> (B, K, n) at each point's cell
        b, c = maps.shape[:2]
        n = c // k
        flat = maps.reshape(b, k, n, -1)
        return flat.gather(3, idx[:, :, None, None].expand(-1, -1, n, 1))[..., 0]

    if present is None:
        for name in ("offset_x", "offset_y"):
            loss = loss + reg_weight * F.l1_loss(at_cell(raw[name]), at_cell(targets[name]))
        for name in ("nb_x", "nb_y"):
            loss = loss + nb_weight * F.l1_loss(at_cell(raw[name]), at_cell(targets[name]))
        return loss
    nb_mask = present[:, :, None] if nb_present is None else nb_present
    for name in ("offset_x", "offset_y"):
        err = (at_cell(raw[name]) - at_cell(targets[name])).abs()
        loss = loss + reg_weight * masked_mean(err, present[:, :, None])
    for name in ("nb_x", "nb_y"):
        err = (at_cell(raw[name]) - at_cell(targets[name])).abs()
        loss = loss + nb_weight * masked_mean(err, nb_mask)
    return loss


# ---------------------------------------------------------------------------------------------
# uniform wrappers: loss_fn(model, raw_output, target_points)


def _points(name: str, raw) -> torch.Tensor:
    if not torch.is_tensor(raw):
        raise ValueError(f"loss {name!r} needs a regression model (raw output of (B, K, 2) points)")
    return raw


def l2(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """The recipe: mean squared error of normalised coordinates."""
    pred = _points("l2", raw)
    target, mask = _fill_missing(pred, target)
    if mask is None:
        return F.mse_loss(pred, target)
    return masked_mean((pred - target) ** 2, mask)


def l1(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    pred = _points("l1", raw)
    target, mask = _fill_missing(pred, target)
    if mask is None:
        return F.l1_loss(pred, target)
    return masked_mean((pred - target).abs(), mask)


def smooth_l1(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 with ``beta = 1`` pixel of the crop."""
    size = float(model.input_size)
    pred = _points("smooth_l1", raw)
    target, mask = _fill_missing(pred, target)
    if mask is None:
        return F.smooth_l1_loss(pred * size, target * size, beta=1.0)
    return masked_mean(F.smooth_l1_loss(pred * size, target * size, beta=1.0, reduction="none"), mask)


def wing(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Wing loss, ``w = 10``, ``eps = 2``, on crop pixels (coordinates times ``model.input_size``)."""
    size = float(model.input_size)
    pred = _points("wing", raw)
    target, mask = _fill_missing(pred, target)
    return wing_loss(pred * size, target * size, mask=mask)


def _map_targets(model: nn.Module, target: torch.Tensor):
    """``(model.targets(points), present (B, K) or None)``; missing points get a placeholder position
    (the crop centre) whose maps the caller masks out."""
    missing = target.isnan().any(dim=-1)
    if not missing.any():
        return model.targets(target), None
    filled = torch.where(missing[..., None], torch.full_like(target, 0.5), target)
    return model.targets(filled), ~missing


def adaptive_wing(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    """Adaptive wing on the model's heat map (``heatmap`` or PIPNet's ``score``) vs ``model.targets``."""
    if not isinstance(raw, dict) or not hasattr(model, "targets"):
        raise ValueError("loss 'adaptive_wing' needs a heat-map model (dict output and model.targets)")
    key = "heatmap" if "heatmap" in raw else "score"
    targets, present = _map_targets(model, target)
    return adaptive_wing_loss(raw[key], targets[key], mask=None if present is None else present[:, :, None, None])


def pipnet(model: nn.Module, raw, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(raw, dict) or not hasattr(model, "targets"):
        raise ValueError("loss 'pipnet' needs a PIPNet model")
    targets, present = _map_targets(model, target)
    if present is None:
        return pipnet_loss(raw, targets)
    nb_present = present[:, :, None] & present[:, model.nb_index.to(present.device)]  # (B, K, nb)
    return pipnet_loss(raw, targets, present=present, nb_present=nb_present)


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

"""Model registry (timm style) and the interface every landmark model follows.

A model is registered by decorating its constructor, ``fn(num_points=68, input_size=..., **cfg)``;
the key is the function's name. Every registered model is a :class:`LandmarkModel`:

* ``model(x)`` takes ``(B, 3, H, W)`` RGB floats in ``[0, 1]`` and returns the *raw* head output
  (a tensor or a dict of tensors) that the losses in :mod:`facemark.losses` train;
* ``model.decode(raw)`` turns that into ``(B, K, 2)`` points in normalised ``0..1`` crop
  coordinates (see :mod:`facemark.geometry`), so inference is ``model.decode(model(x))``;
* ``model.predict_points(x)`` does both and is traceable by ``torch.onnx.export``;
* attributes ``num_points``, ``input_size``, ``default_loss`` (a name in ``facemark.losses.LOSSES``)
  and the buffer ``mean`` (``(1, 3, 1, 1)``) that the model subtracts from its input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model constructor under ``fn.__name__``."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def create_model(name: str, num_points: int = 68, **cfg) -> nn.Module:
    """Build the registered model ``name`` for ``num_points`` points; ``cfg`` goes to its constructor."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {list_models()}")
    return _MODELS[name](num_points=num_points, **cfg)


def list_models() -> list[str]:
    return sorted(_MODELS)


class LandmarkModel(nn.Module):
    """Base class: input normalisation, ``decode`` and ``predict_points``."""

    default_loss = "l2"

    def __init__(self, num_points: int, input_size: int, mean: tuple[float, float, float] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.num_points = int(num_points)
        self.input_size = int(input_size)
        # A fixed per-channel mean (the recipe's); BatchNorm after the stem takes care of scale.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean

    def decode(self, raw) -> torch.Tensor:
        """Raw output -> ``(B, K, 2)`` normalised points. Regression models output points already."""
        return raw

    def predict_points(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(forward(x))``: the export / inference entry point."""
        return self.decode(self.forward(x))

    def renames_from(self, source_args: dict) -> dict[str, str]:
        """``{own tensor name: source tensor name}`` where a checkpoint built with ``source_args``
        (its ``model_args``) holds a tensor under another name (a ResNet backbone with fewer blocks
        per stage: :meth:`~facemark.models.backbones.ResNet.renames_from`); empty otherwise."""
        backbone = getattr(self, "backbone", None)
        if not hasattr(backbone, "renames_from"):
            return {}
        prefixes = {f"backbone.{own}": f"backbone.{source}"
                    for own, source in backbone.renames_from(source_args.get("layers")).items()}
        renames = {}
        for name in self.state_dict():
            own = next((own for own in prefixes if name.startswith(own)), None)
            if own is not None:
                renames[name] = prefixes[own] + name[len(own):]
        return renames

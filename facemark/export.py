"""ONNX export (the recipe's "freeze"): an inference graph without training-only parts.

The exported graph takes ``(B, 3, S, S)`` RGB floats in ``0..1`` (dynamic batch) and returns
``(B, K, 2)`` normalised crop coordinates: eval mode (dropout off), batch norm folded into the
convolutions, decoding included. The checkpoint's model spec (:mod:`facemark.spec`) and provenance
are stored in the file's metadata under the key ``facemark``, the same dict the API reads from the
``.pt``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from facemark.files import atomic_path
from facemark.checkpoint import load_checkpoint, model_from_checkpoint, model_metadata, model_spec, save_checkpoint
from facemark.spec import METADATA_KEY


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential`` (eval copy)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return model


class PointsOnly(nn.Module):
    """``forward = model.predict_points``: the graph that export traces (raw heads + decoding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict_points(x)


SPEC_KEYS = ("model_name", "model_args", "num_points", "input_size", "crop", "scheme", "mean", "std")
INFERENCE_KEYS = ("model", *SPEC_KEYS, "step", "best_nme", "config", "facemark_version")


def export_inference_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Copy of ``checkpoint`` without optimizer, scheduler and history: what inference needs."""
    state = load_checkpoint(checkpoint)
    state.update(model_spec(state).to_dict())  # a checkpoint written before the spec gets it whole
    save_checkpoint({k: state[k] for k in INFERENCE_KEYS if k in state}, out)
    return Path(out)


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Export ``checkpoint`` to ``out`` (written atomically) and return the path."""
    import onnx

    state = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(state)
    wrapper = PointsOnly(fold_batch_norm(model)).eval()
    size = int(state["model_args"]["input_size"])
    with atomic_path(out) as tmp:
        torch.onnx.export(
            wrapper, (torch.rand(1, 3, size, size),), str(tmp), input_names=["image"], output_names=["points"],
            dynamic_axes={"image": {0: "batch"}, "points": {0: "batch"}}, opset_version=opset, dynamo=False,
        )
        graph = onnx.load(str(tmp))
        meta = model_metadata(state)  # the checkpoint's spec and provenance, as the API reads them from the .pt
        graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
    return Path(out)

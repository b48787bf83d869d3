"""ONNX export (the recipe's "freeze"): an inference graph without training-only parts.

The exported graph takes ``(B, 3, S, S)`` RGB floats in ``0..1`` (dynamic batch) and returns
``(B, K, 2)`` normalised crop coordinates (``points``; PIPNet models add ``point_features``
``(B, K, 2)``, the raw confidence features of :mod:`facemark.quality`): eval mode (dropout off), batch norm folded into the
convolutions, decoding included. The checkpoint's model spec (:mod:`facemark.spec`) and provenance
are stored in the file's metadata under the key ``facemark``, the same dict the API reads from the
``.pt``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from facemark.checkpoint import load_checkpoint, model_from_checkpoint, model_metadata, model_spec, save_checkpoint
from facemark.data.faces import load_faces
from facemark.data.store import read_dataset_image
from facemark.files import atomic_path
from facemark.geometry import box_from_points, crop_box_from_box, crop_image, crops_to_input
from facemark.spec import METADATA_KEY, ModelSpec, read_onnx_metadata


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


class PointsAndFeatures(PointsOnly):
    """``forward = model.predict_with_features``: points and the raw per-point confidence features
    (:mod:`facemark.quality`) of models that have them (PIPNet), as the outputs ``points`` and ``point_features``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict_with_features(x)


SPEC_KEYS = ("model_name", "model_args", "num_points", "input_size", "crop", "scheme", "mean", "std", "quality")
INFERENCE_KEYS = ("model", *SPEC_KEYS, "step", "best_nme", "config", "facemark_version", "trained_on")


def export_inference_checkpoint(checkpoint: str | Path, out: str | Path, quality: dict | None = None) -> Path:
    """Copy of ``checkpoint`` without optimizer, scheduler and history: what inference needs.
    ``quality``: a :mod:`facemark.quality` calibration to store in its spec (``python -m bench.fit_quality``)."""
    state = load_checkpoint(checkpoint)
    if quality is not None:
        state["quality"] = quality
    state.update(model_spec(state).to_dict())  # a checkpoint written before the spec gets it whole
    save_checkpoint({k: state[k] for k in INFERENCE_KEYS if k in state}, out)
    return Path(out)


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, quality: dict | None = None) -> Path:
    """Export ``checkpoint`` to ``out`` (written atomically) and return the path; ``quality`` as in
    :func:`export_inference_checkpoint`."""
    state = load_checkpoint(checkpoint)
    if quality is not None:
        state["quality"] = quality
    model, _ = model_from_checkpoint(state)
    features = hasattr(model, "predict_with_features")
    wrapper = (PointsAndFeatures if features else PointsOnly)(fold_batch_norm(model)).eval()
    outputs = ["points", "point_features"] if features else ["points"]
    size = int(state["model_args"]["input_size"])
    with atomic_path(out) as tmp:
        torch.onnx.export(
            wrapper, (torch.rand(1, 3, size, size),), str(tmp), input_names=["image"], output_names=outputs,
            dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}, opset_version=opset,
            dynamo=False,
        )
        graph = onnx.load(str(tmp))
        meta = model_metadata(state)  # the checkpoint's spec and provenance, as the API reads them from the .pt
        graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
    return Path(out)


def decode_nodes(graph) -> list[str]:
    """The nodes of an exported graph that are not the convolutional network: every node that is
    neither a ``Conv`` nor upstream of one (the decoding of score maps into points, a regression
    head's fully connected layers, the point features). INT8 quantization leaves them in float:
    quantized, the ``points`` output itself was rounded to 256 levels, which cost the PIPNet student
    0.14 % NME (3.44 -> 3.58) against 0.01 % with the network alone quantized, at the same speed
    (``python -m bench.quantize_int8``)."""
    made_by = {name: node for node in graph.node for name in node.output}
    network, todo = set(), [node for node in graph.node if node.op_type == "Conv"]
    while todo:
        node = todo.pop()
        if id(node) not in network:
            network.add(id(node))
            todo.extend(made_by[name] for name in node.input if name in made_by)
    return [node.name for node in graph.node if id(node) not in network]


def quantize_onnx(model: str | Path, out: str | Path, data, count: int = 256, seed: int = 0) -> Path:
    """An INT8 copy of the ONNX ``model`` at ``out`` (onnxruntime static quantization: QDQ format,
    per-channel int8 weights in 7 bits, uint8 activations with percentile ranges; the convolutional
    network only, its decoding stays float: :func:`decode_nodes`), calibrated on ``count`` training
    crops of ``data`` (a prepared folder or a store; its ``train`` split), cut as inference cuts them
    (the spec's crop rule and input size, ground-truth landmark box). The spec is copied into the new
    file's metadata, with ``"precision": "int8"`` and ``"int8_weight_bits": 7``. Measure what it
    costs before using it: ``python -m bench.quantize_int8``."""
    meta = read_onnx_metadata(model)
    spec = ModelSpec.from_dict(meta, source=model)
    faces, _, _ = load_faces(data, split="train")
    if not faces:
        raise ValueError(f"{data}: no training faces to calibrate the INT8 model on")
    picked = np.random.default_rng(seed).choice(len(faces), size=min(count, len(faces)), replace=False)
    crops = []
    for i in picked:
        image = read_dataset_image(faces[i].image_path)
        box = crop_box_from_box(box_from_points(faces[i].points), (image.shape[1], image.shape[0]), spec.crop)
        crops.append(crop_image(image, box, spec.input_size))
    batches = [{"image": crops_to_input(np.stack(crops[i : i + 16]))} for i in range(0, len(crops), 16)]

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(batches)

        def get_next(self):
            return next(self.left, None)

    with atomic_path(out) as tmp:
        quant_pre_process(str(model), str(tmp))  # shape inference and graph clean-up, as onnxruntime recommends
        prepared = onnx.load(str(tmp))
        for i, node in enumerate(prepared.graph.node):  # the quantizer leaves nodes out by name
            node.name = node.name or f"unnamed_{i}_{node.op_type}"
        onnx.save(prepared, str(tmp))
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrator prints its progress
            quantize_static(str(tmp), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=decode_nodes(prepared.graph),
                            # 7-bit weights (-64..64): on CPUs without VNNI (AVX2 alone) ONNX Runtime
                            # multiplies uint8 by int8 in pairs summed into int16 (vpmaddubsw), which
                            # saturates with 8-bit weights: the default lost 0.18 points of NME there
                            # (2.96 against 2.78 %) and nothing with 7 bits, at the same speed. With
                            # 7 bits the sums fit, so every CPU computes the same integers.
                            reduce_range=True,
                            # ranges from the 99.999th percentile, not the extremes: finer steps, and
                            # points that flicker less on video (bench_video: 0.516 against 0.552 %)
                            calibrate_method=CalibrationMethod.Percentile)
        graph = onnx.load(str(tmp))
        del graph.metadata_props[:]
        graph.metadata_props.add(key=METADATA_KEY, value=json.dumps({**meta, "precision": "int8", "int8_weight_bits": 7,
                                                                      "int8_calibration": f"{len(crops)} crops of {data}"}))
        onnx.save(graph, str(tmp))
    return Path(out)

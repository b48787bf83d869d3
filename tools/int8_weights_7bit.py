"""An INT8 ONNX file with 8-bit weights -> the same model with 7-bit weights, as
``facemark export --int8`` makes them now. Run from the repository root::

    python -m tools.int8_weights_7bit old.int8.onnx --out new.int8.onnx

Why: on CPUs without VNNI (AVX2 alone) ONNX Runtime's INT8 convolutions sum uint8 x int8 products
in pairs into int16, which saturates when the weights use all 8 bits; the shipped default lost 0.18
points of NME that way (``facemark.export.quantize_onnx``). A file quantized before that change,
whose float model is gone (``fast.onnx``), is fixed here: every symmetric int8 weight tensor ``w``
with per-channel scales ``s`` becomes ``round(w / 2)`` with scales ``2 s``, and its Conv's int32
bias the same; activations, the float decoding and the metadata stay (``"int8_weight_bits": 7`` is
added). A file whose weights already fit in -64..64 is refused, and so is ``--out`` naming the input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from facemark.files import atomic_path
from facemark.spec import METADATA_KEY


def to_7bit(graph: onnx.ModelProto) -> int:
    """Halve every int8 weight tensor a DequantizeLinear reads, in place; returns how many."""
    initializers = {init.name: init for init in graph.graph.initializer}
    weights = {}
    for node in graph.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            tensor = initializers[node.input[0]]
            if tensor.data_type == onnx.TensorProto.INT8:
                weights[node.input[0]] = node.input[1:]
    for name, (scale_name, *zero_name) in weights.items():
        w = numpy_helper.to_array(initializers[name]).astype(np.int16)
        if zero_name and np.any(numpy_helper.to_array(initializers[zero_name[0]])):
            raise ValueError(f"weight {name!r}: zero point not 0 (not symmetric), cannot halve it")
        if np.abs(w).max() <= 64:
            raise ValueError(f"weight {name!r} already fits in -64..64: this file has 7-bit weights")
        scale = numpy_helper.to_array(initializers[scale_name])
        initializers[name].CopyFrom(numpy_helper.from_array(np.clip(np.rint(w / 2), -64, 64).astype(np.int8), name))
        initializers[scale_name].CopyFrom(numpy_helper.from_array((scale * 2).astype(scale.dtype), scale_name))
    # a quantized bias's scale must stay the input's times the weight's, or ONNX Runtime leaves the
    # Conv unfused (a float Conv between DequantizeLinear nodes, 4x slower): halve it too
    producers = {out: node for node in graph.graph.node for out in node.output}
    for conv in graph.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3:
            continue
        weight, bias = producers.get(conv.input[1]), producers.get(conv.input[2])
        if weight is None or weight.input[0] not in weights or bias is None or bias.op_type != "DequantizeLinear":
            continue
        values, scale = initializers.get(bias.input[0]), initializers.get(bias.input[1])
        if values is None or scale is None or values.data_type != onnx.TensorProto.INT32:
            continue
        b, s = numpy_helper.to_array(values), numpy_helper.to_array(scale)
        values.CopyFrom(numpy_helper.from_array(np.rint(b / 2).astype(np.int32), bias.input[0]))
        scale.CopyFrom(numpy_helper.from_array((s * 2).astype(s.dtype), bias.input[1]))
    return len(weights)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an INT8 .onnx file (QDQ, 8-bit symmetric weights)")
    ap.add_argument("--out", type=Path, required=True, help="the new file (not the input)")
    args = ap.parse_args(argv)
    if args.out.resolve() == args.model.resolve():
        ap.error(f"--out {args.out}: names the input; write the new file elsewhere")
    try:
        graph = onnx.load(str(args.model))
        count = to_7bit(graph)
    except (OSError, ValueError, DecodeError) as err:
        print(f"error: {args.model}: {err}", file=sys.stderr)
        return 1
    if not count:
        print(f"error: {args.model}: no int8 weights (not an INT8 QDQ file)", file=sys.stderr)
        return 1
    for prop in graph.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps({**json.loads(prop.value), "int8_weight_bits": 7})
    with atomic_path(args.out) as tmp:
        onnx.save(graph, str(tmp))
    print(f"{args.out}: {count} weight tensors in 7 bits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

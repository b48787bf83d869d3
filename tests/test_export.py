"""ONNX export: a clean inference graph with metadata, dynamic batch, and the same numbers as torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_face

import facemark.api
from facemark.api import Landmarker
from facemark.checkpoint import load_checkpoint, model_from_checkpoint
from facemark.cli import main
from facemark.data.dataset import images_to_tensor
from facemark.data.formats.pts import read_pts
from facemark.geometry import CropRule, box_from_points, crop_box_from_box, crop_image
from facemark.spec import METADATA_KEY, ModelSpec


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", str(tiny_checkpoint), "--onnx", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def session(exported):
    import onnxruntime as ort

    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    return model_from_checkpoint(load_checkpoint(tiny_checkpoint))[0].eval()


def _torch_points(model, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model.predict_points(batch).numpy()


def test_graph_is_clean_and_carries_metadata(exported):
    import onnx

    graph = onnx.load(str(exported))
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}, ops
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert meta["model_name"] == "seed_senet" and meta["num_points"] == 68 and meta["input_size"] == 64
    assert CropRule(**meta["crop"]) == CropRule(clip=False) and len(meta["mean"]) == 3


def test_dynamic_batch_and_random_input_parity(session, torch_model):
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        (onnx_points,) = session.run(None, {"image": x.numpy()})
        assert onnx_points.shape == (batch, 68, 2)
        np.testing.assert_allclose(onnx_points, _torch_points(torch_model, x), atol=1e-4)


def test_real_crop_parity(session, torch_model, lite_root, tiny_checkpoint):
    import cv2

    rule = CropRule(**load_checkpoint(tiny_checkpoint)["crop"])
    crops = []
    for pts in sorted(lite_root.rglob("*.pts"))[:4]:
        image = cv2.imread(str(pts.with_suffix(".jpg")))
        height, width = image.shape[:2]
        crop_box = crop_box_from_box(box_from_points(read_pts(pts)), (width, height), rule)
        crops.append(crop_image(image, crop_box, 64))
    x = images_to_tensor(np.stack(crops))
    (onnx_points,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_points, _torch_points(torch_model, x), atol=1e-4)


def test_landmarker_torch_and_onnx_agree(tiny_checkpoint, exported):
    image, points = synthetic_face(np.random.default_rng(3), size=200)
    box = box_from_points(points)
    by_torch = Landmarker(tiny_checkpoint, backend="torch").predict(image, box)
    by_onnx = Landmarker(exported, backend="onnx").predict(image, box)
    assert np.abs(by_onnx - by_torch).max() < 0.05


def test_pt_and_onnx_carry_one_spec(tiny_checkpoint, exported, tmp_path):
    pt, onnx_ = Landmarker(tiny_checkpoint), Landmarker(exported)
    assert (pt.backend, onnx_.backend) == ("torch", "onnx")  # the file decides; nothing exported on the fly
    assert pt.meta == onnx_.meta and pt.spec == onnx_.spec
    assert pt.spec.scheme == "68" and pt.spec.mean == (0.5, 0.5, 0.5) and pt.spec.std == (1.0, 1.0, 1.0)
    assert ModelSpec.from_dict(pt.spec.to_dict()) == pt.spec
    with pytest.raises(ValueError, match="facemark export"):
        Landmarker(tiny_checkpoint, backend="onnx")
    # an inference checkpoint (export --pt) describes the model the same way
    assert main(["export", str(tiny_checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--pt", str(tmp_path / "m.pt")]) == 0
    assert Landmarker(tmp_path / "m.pt").meta == pt.meta


def test_files_written_before_the_spec_still_load(tiny_checkpoint, exported, tmp_path):
    """Checkpoints and ONNX files without scheme / mean / std (written before the spec) load with the
    values those models used, and the shipped default model's two files describe it identically."""
    import onnx

    from facemark.spec import MODEL_DIR as DEFAULT_MODEL_DIR

    state = torch.load(tiny_checkpoint, weights_only=True)
    for key in ("scheme", "mean", "std", "num_points", "input_size"):
        state.pop(key, None)
    torch.save(state, tmp_path / "old.pt")
    graph = onnx.load(str(exported))
    meta = json.loads(graph.metadata_props[0].value)
    for key in ("scheme", "std"):
        meta.pop(key)
    graph.metadata_props[0].value = json.dumps(meta)
    onnx.save(graph, str(tmp_path / "old.onnx"))
    new = Landmarker(tiny_checkpoint).spec
    assert Landmarker(tmp_path / "old.pt").spec == Landmarker(tmp_path / "old.onnx").spec == new
    pt, int8, float_ = (Landmarker(DEFAULT_MODEL_DIR / name) for name in ("default.pt", "default.onnx", "default-float.onnx"))
    assert pt.spec == int8.spec == float_.spec and pt.spec.scheme == "68" and pt.spec.input_size == 128
    assert pt.spec.quality == int8.spec.quality == float_.spec.quality  # one calibration in all three files


@pytest.mark.parametrize("field, value, message", [
    (("crop", "top"), float("nan"), "'crop.top' = nan: expected a number in -0.5..2.0"),
    (("crop", "clip"), "yes", "'crop.clip' = 'yes': expected true or false"),
    (("input_size",), 0, "'input_size' = 0: expected a whole number"),
    (("input_size",), 100000, "'input_size' = 100000: expected a whole number"),
    (("model_args", "num_points"), "68", "'model_args.num_points' = '68'"),
    (("std",), [0, 1, 1], "'std' = [0, 1, 1]: every value must be above 0"),
    (("mean",), [0.5, 0.5], "'mean' = [0.5, 0.5]: expected three finite numbers"),
    (("model_args",), None, "'model_args' = None: expected a mapping"),
])
def test_crafted_onnx_metadata_fails_in_one_line(exported, tmp_path, field, value, message):
    """Every spec field read from an ONNX file is type- and range-checked; the error names the file and field."""
    import onnx

    graph = onnx.load(str(exported))
    meta = json.loads(graph.metadata_props[0].value)
    target = meta
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    graph.metadata_props[0].value = json.dumps(meta)
    path = tmp_path / "crafted.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ValueError) as err:
        Landmarker(path)
    assert str(err.value).startswith(f"{path}: model spec field ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_crafted_quality_calibration_is_refused(tmp_path):
    """A calibration with the wrong feature count or a non-finite coefficient is refused at load."""
    from facemark.spec import read_onnx_metadata

    meta = read_onnx_metadata(Path(facemark.spec.MODEL_DIR) / "default.onnx")
    ModelSpec.from_dict(meta, source="default.onnx")  # the shipped calibration passes
    short = json.loads(json.dumps(meta))
    short["quality"]["face"]["coef"] = short["quality"]["face"]["coef"][:3]
    with pytest.raises(ValueError, match=r"x\.onnx: model spec field 'quality\.face'.*expected 6 features"):
        ModelSpec.from_dict(short, source="x.onnx")
    inf = json.loads(json.dumps(meta))
    inf["quality"]["point"]["intercept"] = float("inf")
    with pytest.raises(ValueError, match=r"'quality\.point'.*not a finite number"):
        ModelSpec.from_dict(inf, source="x.onnx")


def test_int8_export_keeps_the_spec_and_stays_close(tiny_checkpoint, synthetic_dataset, tmp_path):
    """`export --int8 DATA` writes a QDQ-quantized copy that carries the same spec and predicts close to the float one."""
    import onnx

    out = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_checkpoint), "--onnx", str(out), "--int8", str(synthetic_dataset),
                 "--calib", "8"]) == 0
    int8 = tmp_path / "tiny.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # only the convolutional network is quantized: no output of the decoding (the fully connected
    # head, the points, the point features) is rounded to 8 bits
    from facemark.export import decode_nodes

    float_graph = onnx.load(str(out)).graph
    decoded = {name for node in float_graph.node if node.name in set(decode_nodes(float_graph)) for name in node.output}
    quantized = {node.input[0] for node in onnx.load(str(int8)).graph.node if node.op_type == "QuantizeLinear"}
    assert "points" in decoded and not decoded & quantized
    assert {node.op_type for node in float_graph.node if node.name in set(decode_nodes(float_graph))} >= {"Gemm"}
    float_lm, int8_lm = Landmarker(out), Landmarker(int8)
    assert int8_lm.spec == float_lm.spec and int8_lm.meta["precision"] == "int8"
    assert "8 crops of" in int8_lm.meta["int8_calibration"] and int8_lm.meta["int8_weight_bits"] == 7
    assert _largest_int8_weight(int8) <= 64 and _unfused_convs(int8, tmp_path) == 0
    image, points = synthetic_face(np.random.default_rng(5))
    box = box_from_points(points)
    a, b = float_lm.predict(image, box), int8_lm.predict(image, box)
    size = max(box[2] - box[0], box[3] - box[1])
    assert b.shape == (68, 2) and np.abs(a - b).mean() < 0.05 * size


def test_int8_leaves_the_decoding_float_in_a_graph_without_node_names(tiny_checkpoint, synthetic_dataset, tmp_path):
    """The quantizer leaves nodes out by name: unnamed ones are named first, so an ONNX file whose
    nodes carry no names still keeps its decoding float."""
    import onnx

    from facemark.export import decode_nodes, export_onnx, quantize_onnx

    named, bare = tmp_path / "named.onnx", tmp_path / "bare.onnx"
    export_onnx(tiny_checkpoint, named)
    proto = onnx.load(str(named))
    decoded = {name for node in proto.graph.node if node.name in set(decode_nodes(proto.graph)) for name in node.output}
    for node in proto.graph.node:
        node.name = ""
    onnx.save(proto, str(bare))
    quantize_onnx(bare, tmp_path / "bare.int8.onnx", synthetic_dataset, count=8)
    graph = onnx.load(str(tmp_path / "bare.int8.onnx")).graph
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    assert quantized and "points" in decoded and not decoded & quantized


def test_int8_export_without_training_faces_is_one_line(tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(tiny_checkpoint), "--onnx", str(tmp_path / "t.onnx"), "--int8", str(empty)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0]


def test_shipped_default_is_int8_and_agrees_with_the_float_default():
    """`Landmarker()` on ONNX Runtime runs the INT8 copy of the default model (its network quantized,
    its decoding float; `default-int8` is the same file), within a small fraction of the
    inter-ocular distance of the float model (`default-float`, and `default.pt` on torch) on the
    sample photo."""
    from facemark.predict import SAMPLE_IMAGE
    from facemark.spec import resolve_model

    float_face, = Landmarker("default-float").detect(SAMPLE_IMAGE)
    int8 = Landmarker()
    int8_face, = int8.detect(SAMPLE_IMAGE)
    iod = np.linalg.norm(float_face.points[36] - float_face.points[45])
    change = np.linalg.norm(float_face.points - int8_face.points, axis=1).mean()
    assert 0 < change < 0.02 * iod
    assert int8.meta["precision"] == "int8" and int8_face.quality is not None
    assert Landmarker("default-float").meta.get("precision", "float32") != "int8"
    assert resolve_model("default-int8") == resolve_model("default") == int8.model_path
    assert Landmarker(backend="torch").model_path.suffix == ".pt"
    with pytest.raises(ValueError, match="ONNX-only"):
        Landmarker("default-int8", backend="torch")


def _crafted_onnx(exported, path, edit) -> Path:
    """A copy of ``exported`` whose facemark metadata is ``edit(meta)`` (a dict, dumped as JSON) or a raw string."""
    import onnx

    graph = onnx.load(str(exported))
    meta = json.loads(graph.metadata_props[0].value)
    value = edit(meta)
    graph.metadata_props[0].value = value if isinstance(value, str) else json.dumps(meta)
    onnx.save(graph, str(path))
    return path


def _crafted_pt(tiny_checkpoint, path, edit) -> Path:
    state = torch.load(tiny_checkpoint, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def _one_line_error(path, call=Landmarker) -> str:
    with pytest.raises((ValueError, RuntimeError)) as err:  # RuntimeError: CheckpointError
        call(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_a_scheme_string_in_a_model_file_is_never_read_as_a_path(exported, tiny_checkpoint, tmp_path):
    """A model file's ``scheme`` used to be opened as a YAML path ("/dev/zero": 4.8 GB then MemoryError;
    "/dev/stdin": a hang; here a real scheme file, which loaded). Now only a built-in name or the full mapping."""
    from facemark.schemes import SCHEME_DIR, get_scheme, scheme_to_dict

    yaml_file = tmp_path / "scheme.yaml"
    yaml_file.write_text((SCHEME_DIR / "ibug68.yaml").read_text())
    onnx_file = _crafted_onnx(exported, tmp_path / "path.onnx", lambda m: m.update(scheme=str(yaml_file)))
    pt_file = _crafted_pt(tiny_checkpoint, tmp_path / "path.pt", lambda s: s.update(scheme=str(yaml_file)))
    for path in (onnx_file, pt_file):
        message = _one_line_error(path)
        assert "model spec field 'scheme'" in message and "never a path" in message
    # what the spec may hold: a built-in scheme's name, or the scheme's whole mapping
    full = _crafted_onnx(exported, tmp_path / "full.onnx", lambda m: m.update(scheme=scheme_to_dict(get_scheme(68))))
    assert Landmarker(full).scheme == get_scheme(68)
    # a mapping with another point count than the graph's is refused too
    five = _crafted_onnx(exported, tmp_path / "five.onnx", lambda m: m.update(scheme=scheme_to_dict(get_scheme(5))))
    assert "has 5 points" in _one_line_error(five)


@pytest.mark.parametrize("edit, words", [
    (lambda m: (m.update(input_size=128), m["model_args"].update(input_size=128)),
     "model spec field 'input_size' = 128: the graph's input 'image' is Bx3x64x64"),
    (lambda m: (m.update(num_points=98, scheme="98"), m["model_args"].update(num_points=98)),
     "model spec field 'model_args.num_points' = 98: the graph's output 'points' is Bx68x2"),
    (lambda m: m.update(input_size=1024), "model spec field 'input_size' = 1024: differs from model_args.input_size"),
    (lambda m: m["crop"].update(top=-0.5, bottom=-0.5), "'crop.top' = -0.5: with bottom = -0.5 the crop box would be 0x"),
    (lambda m: m["crop"].update(side=-0.5), "'crop.side' = -0.5: the crop box would be 0x the landmark box's width"),
], ids=["input-size-128", "98-points", "input-size-1024", "crop-height-0", "crop-width-0"])
def test_the_spec_is_checked_against_the_graph_and_the_crop_geometry(exported, tmp_path, edit, words):
    """Each field was in range, so these loaded, and `serve` said /healthz ok and answered every request 500."""
    assert words in _one_line_error(_crafted_onnx(exported, tmp_path / "crafted.onnx", edit))


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.update(input_size=1024), "model spec field 'input_size' = 1024: differs from model_args.input_size"),
    (lambda s: s.update(num_points=98), "model spec field 'num_points' = 98: differs from model_args.num_points"),
    (lambda s: s["crop"].update(top=-0.5, bottom=-0.5), "crop.top = -0.5: with bottom = -0.5 the crop box would be 0x"),
    (lambda s: s.update(std=[1.0, 0.0, 1.0]), "model spec field 'std' = [1.0, 0.0, 1.0]: every value must be above 0"),
], ids=["input-size-1024", "98-points", "crop-height-0", "std-0"])
def test_a_checkpoint_spec_gets_the_same_checks(tiny_checkpoint, tmp_path, edit, words):
    assert words in _one_line_error(_crafted_pt(tiny_checkpoint, tmp_path / "crafted.pt", edit))


@pytest.mark.parametrize("raw, words", [
    ("{not json", "ONNX metadata 'facemark' is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
], ids=["not-json", "too-deep"])
def test_onnx_metadata_that_is_not_a_spec_names_the_file(exported, tmp_path, raw, words):
    assert words in _one_line_error(_crafted_onnx(exported, tmp_path / "bad.onnx", lambda m: raw))


def _largest_int8_weight(path) -> int:
    """The largest |w| over the int8 weight tensors that a DequantizeLinear of ``path`` reads."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    weights = [numpy_helper.to_array(initializers[n.input[0]]) for n in graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in initializers
               and initializers[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weights, path
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


@pytest.mark.parametrize("name", ["default.onnx", "fast.onnx"])
def test_shipped_int8_files_have_7_bit_weights_and_fused_convs(name, tmp_path):
    """8-bit weights saturate ONNX Runtime's INT8 sums on CPUs without VNNI (the default lost 0.18
    points of NME on AVX2 alone); 7-bit ones cannot."""
    path = Path(facemark.spec.MODEL_DIR) / name
    assert _largest_int8_weight(path) <= 64 and Landmarker(path).meta["int8_weight_bits"] == 7
    assert _unfused_convs(path, tmp_path) == 0


def _unfused_convs(path, tmp_path) -> int:
    """Convs left float in ONNX Runtime's optimized graph of an INT8 file (each a QLinearConv when
    its weight, bias and input scales agree; a float Conv between DequantizeLinears is ~4x slower)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3  # its warning that the file is for this machine only
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert "QLinearConv" in ops, path
    return ops.count("Conv")

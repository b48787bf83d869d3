"""facemark.runtime: model names and files -> spec + runner, and the plain install (no extras)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from facemark.runtime import open_model, resolve_model
from facemark.spec import MODEL_DIR, SHIPPED_MODELS

#: modules of the extras (facemark.extras): the plain install has none of them
EXTRA_MODULES = ("torch", "onnx", "matplotlib", "scipy", "h5py", "sklearn", "tensorboard", "fastapi", "uvicorn",
                 "ray", "pyarrow", "dlib")
BLOCK = f"""
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Blocked())
"""


def _without_extras(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where every extra's module fails to import, as in a plain install."""
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_the_plain_install_finds_faces_and_evaluates_without_any_extra(tmp_path):
    """`pip install facemark` brings no torch: Landmarker, `predict --sample` and `eval` of an ONNX model
    run on ONNX Runtime + OpenCV + numpy (every extra's module blocked here)."""
    run = _without_extras(f"""
        import facemark, numpy as np
        from facemark.cli import main
        from facemark.predict import SAMPLE_IMAGE
        faces = facemark.Landmarker().detect(SAMPLE_IMAGE)
        assert len(faces) == 1 and faces[0].points.shape == (68, 2) and faces[0].quality > 0.5
        assert main(["predict", "--sample", "--out", {str(tmp_path / "out")!r}]) == 0
        for name in {EXTRA_MODULES!r}:
            assert name not in sys.modules, name
        print("ok")
    """)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


def test_a_command_that_needs_an_extra_says_which_in_one_line():
    run = _without_extras("""
        from facemark.cli import main
        raise SystemExit(main(["train", "--config", "configs/300w_pipnet_resnet_128.yaml"]))
    """)
    assert run.returncode == 2
    assert run.stderr.strip() == 'facemark: error: facemark train needs torch, which is not installed: pip install "facemark[train]"'
    run = _without_extras(f"""
        from facemark.cli import main
        raise SystemExit(main(["predict", "--sample", "--model", {str(MODEL_DIR / "default.pt")!r}, "--out", "/tmp/x"]))
    """)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and 'pip install "facemark[train]"' in run.stderr


def test_shipped_names_resolve_to_their_files_and_open():
    assert resolve_model("default") == MODEL_DIR / "default.onnx"
    assert resolve_model("default", "torch") == MODEL_DIR / "default.pt"
    for name in SHIPPED_MODELS:
        model = open_model(name)
        assert model.backend == "onnx" and model.spec is not None
        crops = np.zeros((2, model.spec.input_size, model.spec.input_size, 3), np.uint8)
        points, features = model.runner.run_with_features(crops)
        assert points.shape == (2, model.spec.num_points, 2) and features.shape == points.shape


def test_bad_model_arguments_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx: model file not found"):
        open_model(tmp_path / "nope.onnx")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match=r"model.txt: expected a .pt checkpoint, an .onnx model"):
        open_model(tmp_path / "model.txt")
    with pytest.raises(ValueError, match="backend must be 'onnx' or 'torch'"):
        open_model("default", backend="tflite")
    with pytest.raises(ValueError, match="a .pt checkpoint runs with backend='torch'"):
        open_model(MODEL_DIR / "default.pt", backend="onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"junk.onnx: not a readable ONNX file"):
        open_model(tmp_path / "junk.onnx")


def test_one_resolver_for_the_api_and_train_init(tmp_path):
    """`train --init` resolved names with a rule of its own (``MODEL_DIR/<name>.pt`` or any path):
    now it is :func:`facemark.spec.resolve_model`, the API's, with one-line refusals."""
    from facemark import spec
    from facemark.checkpoint import CheckpointError
    from facemark.classical import SUFFIXES
    from facemark.train import init_path

    assert resolve_model is spec.resolve_model and set(SUFFIXES) <= set(spec.MODEL_SUFFIXES)
    assert init_path("default") == resolve_model("default", "torch") == MODEL_DIR / "default.pt"
    # a five-point view is its model's file (facemark.spec.FIVE_POINT_VIEWS)
    assert init_path("default-5") == resolve_model("default-5", "torch") == MODEL_DIR / "default.pt"
    assert init_path(str(MODEL_DIR / "default.pt")) == MODEL_DIR / "default.pt"
    for init, words in (("default-int8", "ONNX-only model"), (str(tmp_path / "nope.pt"), "model file not found"),
                        (str(MODEL_DIR / "default.onnx"), "is not a .pt checkpoint"), (str(tmp_path), "not found")):
        with pytest.raises(CheckpointError, match=words) as err:
            init_path(init)
        assert str(err.value).startswith(f"init {init}: ") and "\n" not in str(err.value)


def test_not_found_lists_every_shipped_name(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        resolve_model(tmp_path / "missing.onnx")
    assert all(name in str(err.value) for name in SHIPPED_MODELS)


def test_one_model_digest_the_full_sha256_of_the_file(tmp_path):
    import hashlib
    import os

    from facemark.runtime import model_digest

    shipped = MODEL_DIR / "default.onnx"
    assert model_digest("default") == model_digest(shipped) == hashlib.sha256(shipped.read_bytes()).hexdigest()
    copy = tmp_path / "m.onnx"
    copy.write_bytes(b"one")
    assert model_digest(copy) == hashlib.sha256(b"one").hexdigest() and len(model_digest(copy)) == 64
    copy.write_bytes(b"two")  # a new version of the file: hashed again
    os.utime(copy, ns=(1, 10**9))
    assert model_digest(copy) == hashlib.sha256(b"two").hexdigest()


def test_an_int8_file_with_8_bit_weights_is_loaded_with_a_warning(tmp_path):
    """INT8 files exported before 7-bit weights saturate on CPUs without VNNI: loading one says so
    (and how to re-export it); the shipped INT8 files load silently."""
    import json
    import warnings

    import onnx

    graph = onnx.load(str(MODEL_DIR / "default.onnx"))
    meta = json.loads(graph.metadata_props[0].value)
    del meta["int8_weight_bits"]
    graph.metadata_props[0].value = json.dumps(meta)
    old = tmp_path / "old.int8.onnx"
    onnx.save(graph, str(old))
    with pytest.warns(UserWarning, match=r"old\.int8\.onnx: INT8 with 8-bit weights .*`facemark export \.\.\. --int8`"):
        open_model(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("default", "fast", "default-float"):
            open_model(name)

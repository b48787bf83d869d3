"""The model spec: what a landmark model needs at inference, as one small dataclass.

Training writes it into the checkpoint (its fields at the checkpoint's top level, beside the
weights), :func:`facemark.export.export_onnx` copies the same dict into the ONNX file's metadata
(key ``facemark``), and :class:`facemark.Landmarker` reads it from either file, so a ``.pt`` and
the ``.onnx`` exported from it describe their model identically::

    architecture   model_name + model_args: create_model(model_name, **model_args) rebuilds it
    input_size     the square crop's side in pixels
    crop           the crop rule (facemark.geometry.CropRule) that cut the training crops
    scheme         the point scheme: a built-in one's name ("68", "98", "29", "5": facemark.schemes),
                   or a custom scheme (``--scheme my.yaml``) as its full mapping
    mean, std      input normalisation, RGB in 0..1: the model computes (x - mean) / std itself
                   (inside the ONNX graph too), so callers feed plain RGB / 255
    quality        optional: the point-score and fit-quality calibration (facemark.quality, fitted
                   by facemark.calibrate.fit_quality: ``python -m bench.fit_quality``); absent in older files, which then
                   give ``Face.point_scores = Face.quality = None``

Files written before the spec had ``scheme``, ``mean`` and ``std`` load with the values those
models used (the point count's scheme, the model's ``mean`` buffer, std 1). Torch-free, so the
ONNX path of the API never imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime as ort

from facemark.geometry import CropRule, CropRuleError
from facemark.quality import POINT_FEATURES, QualityCalibration
from facemark.schemes import scheme_from_spec

#: The ONNX metadata key holding the spec (JSON).
METADATA_KEY = "facemark"
#: the models shipped in the package (``facemark/assets/models``) and their files: ``default`` (68
#: points, flip test; on ONNX Runtime its INT8 copy ``default.onnx``, the network quantized and its
#: decoding float: the float model's NME within 0.01 % at 0.6x its time per photo; on torch its
#: float checkpoint ``default.pt``, which training starts from), ``default-float`` (the same model
#: in float32 ONNX), ``default-int8`` (the earlier name of the default's INT8 copy: the same file),
#: ``default-5`` (5 points, cuhk-5pt order) and ``fast`` (68 points, one pass: the flip test
#: distilled into the network, INT8, ONNX only), each its ONNX file first; :func:`resolve_model`
#: picks the file
SHIPPED_FILES = {
    "default": ("default.onnx", "default.pt"),
    "default-float": ("default-float.onnx",),
    "default-int8": ("default.onnx",),
    "fast": ("fast.onnx",),
}
#: shipped names that run another shipped model and give its points converted to five
#: (:func:`facemark.schemes.to_five`): ``default-5`` is the 68-point default's one pass, five points
#: out (its eye centres, the means of its eye points, beat a separate five-point model's:
#: bench/results/five_points.md); the file of a view is its model's
FIVE_POINT_VIEWS = {"default-5": "default"}
SHIPPED_MODELS = (*SHIPPED_FILES, *FIVE_POINT_VIEWS)
MODEL_DIR = Path(str(files("facemark") / "assets" / "models"))
#: the model files facemark runs: ONNX, a torch checkpoint and the classical ones
#: (:data:`facemark.classical.SUFFIXES`: dlib ERT ``.dat``, LBF ``.lbf.npz``)
MODEL_SUFFIXES = (".onnx", ".pt", ".dat", ".npz")
DEFAULT_MEAN = (0.5, 0.5, 0.5)  # the recipe's fixed per-channel mean; BatchNorm after the stem does the scale
DEFAULT_STD = (1.0, 1.0, 1.0)


def resolve_model(model: str | Path, backend: str | None = None) -> Path:
    """The file of ``model``, the one rule for every command (the API through :mod:`facemark.runtime`,
    ``train --init`` and ``teacher``): a shipped name (:data:`SHIPPED_FILES`: its ``.onnx``, or its
    ``.pt`` for ``backend="torch"``) or a path to a model file."""
    model = FIVE_POINT_VIEWS.get(str(model), model)
    if str(model) in SHIPPED_FILES:
        names = SHIPPED_FILES[str(model)]  # its ONNX file first
        wanted = [n for n in names if n.endswith(".pt")] if backend == "torch" else list(names)
        if not wanted:
            raise ValueError(f"'{model}' is an ONNX-only model: use backend='onnx'")
        for path in (MODEL_DIR / name for name in wanted):
            if path.is_file():
                return path
        raise FileNotFoundError(f"no shipped model '{model}' in {MODEL_DIR} (looked for {wanted})")
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (give a shipped model, {', '.join(SHIPPED_MODELS)}; "
                                "a .pt checkpoint, a .onnx file, or a classical .dat / .lbf.npz model)")
    if path.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"{path}: expected a .pt checkpoint, an .onnx model, or a classical model "
                         "(dlib ERT .dat, LBF .lbf.npz)")
    return path


@dataclass(frozen=True)
class ModelSpec:
    model_name: str
    model_args: dict = field(hash=False)
    input_size: int
    crop: CropRule
    scheme: str | dict = field(hash=False)  # a built-in scheme's name, or a custom scheme's mapping
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    quality: dict | None = field(default=None, hash=False, compare=False)  # facemark.calibrate.fit_quality's calibration
    #: whether the model runs with the flip test by default (the crop and its mirror, averaged);
    #: False for a model distilled from a flip-tested teacher (config ``teacher``): one pass
    flip_test: bool = True

    @property
    def num_points(self) -> int:
        return int(self.model_args["num_points"])

    @property
    def point_scheme(self):
        """The :class:`~facemark.schemes.PointScheme` the model was trained with (a built-in name or a
        full mapping: a string in a model file is never read as a path)."""
        return scheme_from_spec(self.scheme, self.num_points, "model spec field 'scheme'")

    def to_dict(self) -> dict:
        """The JSON-ready dict stored in checkpoints and ONNX metadata (``num_points`` included for readers
        that take any model's metadata, classical ones too)."""
        return {
            "model_name": self.model_name,
            "model_args": dict(self.model_args),
            "num_points": self.num_points,
            "input_size": int(self.input_size),
            "crop": self.crop.to_dict(),
            "scheme": self.scheme,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            **({"quality": self.quality} if self.quality else {}),
            "flip_test": bool(self.flip_test),
        }

    @classmethod
    def from_dict(cls, data: dict, mean=None, source: str | Path | None = None) -> ModelSpec:
        """The spec in a checkpoint or ONNX metadata dict; ``mean`` fills it in for files written
        before the spec carried one (a checkpoint's ``mean`` buffer). With ``source`` (the file it came
        from) every field is type- and range-checked first: ``ValueError("<file>: model spec field
        '<key>' = <value>: <why>")``, so a crafted or damaged file fails in one line, not deep inside."""
        if source is not None:
            check_spec_dict(data, source)
        args = dict(data["model_args"])
        return cls(
            model_name=data["model_name"],
            model_args=args,
            input_size=int(data.get("input_size", args["input_size"])),
            crop=CropRule(**data["crop"]),
            scheme=_scheme_value(data.get("scheme", args["num_points"])),
            mean=tuple(float(v) for v in data.get("mean", mean if mean is not None else DEFAULT_MEAN)),
            std=tuple(float(v) for v in data.get("std", DEFAULT_STD)),
            quality=data.get("quality") or None,
            flip_test=bool(data.get("flip_test", True)),
        )


#: the largest crop side a spec may ask for
MAX_INPUT_SIZE = 1024


def check_spec_dict(data, source: str | Path) -> None:
    """Raise ``ValueError`` naming ``source`` and the field unless ``data`` is a usable spec dict."""

    def bad(key: str, value, why: str) -> ValueError:
        return ValueError(f"{source}: model spec field '{key}' = {value!r}: {why}")

    def count(key: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INPUT_SIZE * 4:
            raise bad(key, value, f"expected a whole number in 1..{MAX_INPUT_SIZE * 4}")

    if not isinstance(data, dict):
        raise ValueError(f"{source}: model spec is a {type(data).__name__}, expected a mapping")
    for key in ("model_name", "model_args", "crop"):
        if key not in data:
            raise ValueError(f"{source}: model spec field '{key}' is missing")
    if not isinstance(data["model_name"], str) or not data["model_name"]:
        raise bad("model_name", data["model_name"], "expected a model name")
    args = data["model_args"]
    if not isinstance(args, dict):
        raise bad("model_args", args, "expected a mapping")
    for key in ("num_points", "input_size"):
        if key not in args:
            raise ValueError(f"{source}: model spec field 'model_args.{key}' is missing")
        count(f"model_args.{key}", args[key])
    size = data.get("input_size", args["input_size"])
    count("input_size", size)
    if size > MAX_INPUT_SIZE:
        raise bad("input_size", size, f"larger than {MAX_INPUT_SIZE}")
    for key in ("input_size", "num_points"):  # the spec's copies must agree with the model's arguments
        if key in data and data[key] != args[key]:
            raise bad(key, data[key], f"differs from model_args.{key} = {args[key]!r}")
    crop = data["crop"]
    if not isinstance(crop, dict):
        raise bad("crop", crop, "expected a mapping")
    known = {f.name for f in fields(CropRule)}
    for key, value in crop.items():
        if key not in known:
            raise bad(f"crop.{key}", value, f"unknown key (known: {', '.join(sorted(known))})")
    try:
        CropRule(**crop)  # ranges, and a crop box that keeps some of the face (facemark.geometry)
    except CropRuleError as err:
        raise bad(f"crop.{err.key}", err.value, err.why) from None
    for key in ("mean", "std"):
        if key in data:
            value = data[key]
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise bad(key, value, "expected three finite numbers (R, G, B)")
            if key == "std" and not all(v > 0 for v in value):
                raise bad(key, value, "every value must be above 0")
    if "scheme" in data:  # a built-in name or the scheme's full mapping, never a path to read
        try:
            scheme_from_spec(data["scheme"], args["num_points"], f"{source}: model spec field 'scheme'")
        except ValueError as err:  # SchemeError, or no built-in scheme for the point count
            raise ValueError(" ".join(str(err).split())[:500]) from None
    if "flip_test" in data and not isinstance(data["flip_test"], bool):
        raise bad("flip_test", data["flip_test"], "expected true or false")
    quality = data.get("quality")
    if quality:
        try:
            calibration = QualityCalibration.from_dict(quality)
        except (KeyError, TypeError, ValueError) as err:
            raise bad("quality", "...", f"not a facemark quality calibration ({err.__class__.__name__}: {err})") from None
        for name, part, n in (("point", calibration.point, len(POINT_FEATURES)),
                              ("face", calibration.face, len(calibration.face_features))):
            if not all(math.isfinite(v) for v in (*part.mean, *part.scale, *part.coef, part.intercept)):
                raise bad(f"quality.{name}", "...", "a coefficient is not a finite number")
            if {len(part.mean), len(part.scale), len(part.coef)} != {n} or not all(v > 0 for v in part.scale):
                raise bad(f"quality.{name}", "...", f"expected {n} features with positive scales")


def _scheme_value(value) -> str | dict:
    return dict(value) if isinstance(value, dict) else str(value)


def read_onnx_metadata(path: str | Path, session=None) -> dict:
    """The facemark metadata dict of an exported ONNX file (spec + provenance), its spec checked
    (:func:`check_spec_dict`) and checked against the graph: the input must be ``(B, 3, S, S)`` with
    ``S`` the spec's ``input_size`` and the output ``(B, K, 2)`` with ``K`` its point count (one
    zero crop is run through it: exported graphs leave ``K`` unnamed). ``ValueError`` naming the
    file (and the field) otherwise. ONNX Runtime reads the file (``session``: one already opened on
    it), so this needs neither torch nor the ``onnx`` package."""
    if session is None:
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - protobuf and onnxruntime fail in their own ways on foreign bytes
            raise ValueError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: ONNX file has no facemark metadata; export it with `facemark export`")
    try:
        meta = json.loads(props[METADATA_KEY])
    except ValueError as err:
        raise ValueError(f"{path}: ONNX metadata '{METADATA_KEY}' is not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: ONNX metadata '{METADATA_KEY}' is nested too deeply to be a model spec") from None
    check_spec_dict(meta, path)
    _check_graph(session, meta, path)
    return meta


def _shape_text(dims: list[int | None]) -> str:
    return "x".join("B" if d is None else str(d) for d in dims)


def _check_graph(session, meta: dict, path) -> None:
    """The spec's input size and point count against the graph's input and output shapes."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if not inputs or not outputs:
        raise ValueError(f"{path}: the ONNX graph has no input or no output")
    image = next((i for i in inputs if i.name == "image"), inputs[0])
    points = next((o for o in outputs if o.name == "points"), outputs[0])
    size, count = meta.get("input_size", meta["model_args"]["input_size"]), meta["model_args"]["num_points"]
    shape_in = [d if isinstance(d, int) else None for d in image.shape]
    if len(shape_in) != 4 or shape_in[1] not in (None, 3):
        raise ValueError(f"{path}: the ONNX graph's input '{image.name}' is {_shape_text(shape_in)}, expected Bx3xSxS")
    if any(d is not None and d != size for d in shape_in[2:]):
        raise ValueError(f"{path}: model spec field 'input_size' = {size!r}: the graph's input '{image.name}' "
                         f"is {_shape_text(shape_in)}")
    try:  # the output's shape as the graph computes it for one zero crop of the spec's size
        out = session.run([points.name], {image.name: np.zeros((1, 3, size, size), np.float32)})[0]
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors on a graph that does not fit
        message = " ".join(str(err).split())[:200]
        raise ValueError(f"{path}: model spec field 'input_size' = {size!r}: the graph cannot run on "
                         f"1x3x{size}x{size} ({message})") from None
    shape_out = [None, *out.shape[1:]]
    if len(shape_out) != 3 or shape_out[2] not in (None, 2):
        raise ValueError(f"{path}: the ONNX graph's output '{points.name}' is {_shape_text(shape_out)}, expected BxKx2")
    if shape_out[1] is not None and shape_out[1] != count:
        raise ValueError(f"{path}: model spec field 'model_args.num_points' = {count!r}: the graph's output "
                         f"'{points.name}' is {_shape_text(shape_out)}")

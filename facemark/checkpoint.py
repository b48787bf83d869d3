"""Checkpoints: one self-describing dict, written atomically, loaded with ``weights_only=True``.

A checkpoint carries everything needed to rebuild the model and its preprocessing, the model
spec (:mod:`facemark.spec`: model name and arguments, input size, crop rule, point scheme,
normalisation), so export and inference never guess.
:func:`load_checkpoint` checks those fields (and that the weights fit the model they describe)
before anything uses them, so a crafted or foreign file is a one-line error naming the field.
"""

from __future__ import annotations

import math
import pickle
import shutil
import typing
import warnings
import zipfile
from pathlib import Path

import pydantic
import torch

from facemark import __version__
from facemark.files import atomic_path
from facemark.geometry import CropRule
from facemark.models import create_model, list_models
from facemark.models.registry import _MODELS  # the registry has no public accessor for a constructor
from facemark.schemes import spec_value
from facemark.spec import DEFAULT_MEAN, ModelSpec, check_spec_dict


class CheckpointError(RuntimeError):
    pass


def check_model_args(model_name: str, model_args: dict) -> dict:
    """``model_args`` for ``create_model(model_name, **model_args)``, values converted to the
    constructor's annotated types; ``ValueError("model_args.<key> = <value>: <what is allowed>")``
    otherwise. The model is also built once on PyTorch's meta device (no memory, no weights), so
    any argument the constructor refuses is caught here, before training or inference starts."""
    if not isinstance(model_name, str) or model_name not in list_models():
        raise ValueError(f"model = {model_name!r}: unknown model (known: {', '.join(list_models())})")
    if not isinstance(model_args, dict) or not all(isinstance(k, str) for k in model_args):
        raise ValueError(f"model_args = {model_args!r}: expected a mapping of argument names to values")
    hints = typing.get_type_hints(_MODELS[model_name])
    args = dict(model_args)
    for key, value in args.items():
        if key in hints and key != "return":
            try:
                args[key] = pydantic.TypeAdapter(hints[key]).validate_python(value)
            except pydantic.ValidationError as err:
                raise ValueError(f"model_args.{key} = {value!r}: {err.errors()[0]['msg']}") from None
            if isinstance(args[key], float) and not math.isfinite(args[key]):
                raise ValueError(f"model_args.{key} = {value!r}: expected a finite number")
    for key in ("num_points", "input_size"):
        if key in args and args[key] < 1:
            raise ValueError(f"model_args.{key} = {args[key]!r}: must be at least 1")
    try:
        with torch.device("meta"):
            create_model(model_name, **args)
    except Exception as err:  # noqa: BLE001 - a constructor refuses arguments in its own ways
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(f"model_args = {model_args!r}: {model_name} cannot be built with these ({message})") from None
    return args


def checkpoint_state(model: torch.nn.Module, model_name: str, model_args: dict, crop: CropRule, scheme=None,
                     **extra) -> dict:
    """The self-describing checkpoint dict: weights, the model spec (:class:`~facemark.spec.ModelSpec`:
    how to rebuild the model and prepare its input) at the top level, and ``extra`` (training state).
    ``scheme``: the :class:`~facemark.schemes.PointScheme` (default: the built-in one of the point count)."""
    scheme_value = str(model_args["num_points"]) if scheme is None else spec_value(scheme)
    spec = ModelSpec(model_name, dict(model_args), int(model_args["input_size"]), crop, scheme_value,
                     mean=tuple(model.mean.flatten().tolist()) if hasattr(model, "mean") else DEFAULT_MEAN)
    return {"model": model.state_dict(), **spec.to_dict(), "facemark_version": __version__, **extra}


def model_spec(state: dict) -> ModelSpec:
    """The :class:`~facemark.spec.ModelSpec` of a loaded checkpoint (older files: mean from the weights)."""
    mean = state["model"].get("mean")
    return ModelSpec.from_dict(state, mean=None if mean is None else mean.flatten().tolist())


def model_metadata(state: dict) -> dict:
    """What the API knows about a checkpoint's model: its spec and provenance (training step, best
    validation NME, facemark version, and the faces it was trained on, ``trained_on``:
    :func:`facemark.data.faces.training_record`, when the file has it). Export writes exactly this into
    the ONNX file."""
    return {**model_spec(state).to_dict(), "best_nme": state.get("best_nme"), "step": state.get("step"),
            "facemark_version": state.get("facemark_version"),
            **({"trained_on": state["trained_on"]} if state.get("trained_on") else {})}


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename; a failed write (a full
    disk) is a one-line :class:`CheckpointError` naming the file, the previous checkpoint kept."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (RuntimeError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write failed"
        try:
            free = f"; {shutil.disk_usage(Path(path).parent).free / 2**20:.0f} MB free on its disk"
        except OSError:
            free = ""
        raise CheckpointError(f"{path}: cannot write the checkpoint ({reason}{free}); "
                              "the previous one, if any, is unchanged") from None


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at ``path``, its model fields checked; :class:`CheckpointError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol: torch warns over several lines first
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's page of explanation: keep the line that says what it refused
        what = next((f" ({line.strip().removeprefix('WeightsUnpickler error: ').rstrip('.')})"
                     for line in str(err).splitlines() if "unsupported" in line.lower()), "")
        raise CheckpointError(f"{path}: refused: it holds Python objects, not only weights{what}; a weights-only "
                              "load never runs them (a foreign or malicious file?)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, TypeError, ImportError,
            IndexError, KeyError, OSError) as err:  # torch.load fails in many ways on foreign bytes
        reason = " ".join(f"{err.__class__.__name__}: {err}".split())
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated ({reason[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{path}: not a facemark checkpoint (no model weights or model name)")
    for key, kind in (("model", dict), ("model_name", str), ("model_args", dict), ("crop", dict)):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint field '{key}' is missing")
        if not isinstance(state[key], kind):
            raise CheckpointError(f"{path}: checkpoint field '{key}' is a {type(state[key]).__name__}, "
                                  f"expected a {kind.__name__}")
    if state["model_name"] not in list_models():
        raise CheckpointError(f"{path}: checkpoint field 'model_name' = {state['model_name']!r} is not a known model "
                              f"({', '.join(list_models())})")
    for key in ("num_points", "input_size"):
        if key not in state["model_args"]:
            raise CheckpointError(f"{path}: checkpoint field 'model_args.{key}' is missing")
    try:
        state["model_args"] = check_model_args(state["model_name"], state["model_args"])
        state["crop"] = pydantic.TypeAdapter(CropRule).validate_python(state["crop"]).to_dict()
    except ValueError as err:  # pydantic.ValidationError is a ValueError
        raise CheckpointError(f"{path}: checkpoint field {_field_error(err)}") from None
    with torch.device("meta"):  # shapes only: no memory, no weights copied
        expected = {k: tuple(v.shape) for k, v in create_model(state["model_name"], **state["model_args"]).state_dict().items()}
    found = {k: tuple(getattr(v, "shape", ())) for k, v in state["model"].items()}
    problems = [f"missing {k}" for k in expected if k not in found] + [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k} is {found[k]}, expected {shape}" for k, shape in expected.items() if k in found and found[k] != shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{path}: checkpoint field 'model' does not fit {state['model_name']} "
                              f"{state['model_args']} ({'; '.join(problems[:3])}{more})")
    try:  # the same spec checks as an ONNX file's: scheme (never a path), input size, crop geometry, mean/std
        check_spec_dict(state, path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    return state


def _field_error(err: ValueError) -> str:
    if isinstance(err, pydantic.ValidationError):
        e = err.errors()[0]
        if isinstance(e.get("ctx", {}).get("error"), ValueError):  # CropRule's own check (facemark.geometry)
            return str(e["ctx"]["error"])
        return f"crop.{'.'.join(map(str, e['loc']))} = {e['input']!r}: {e['msg']}"
    return str(err)


def model_from_checkpoint(state: dict | str | Path) -> tuple[torch.nn.Module, CropRule]:
    """Rebuild the model (eval mode) and its crop rule from a checkpoint dict or path."""
    if not isinstance(state, dict):
        state = load_checkpoint(state)
    model = create_model(state["model_name"], **state["model_args"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, CropRule(**state["crop"])

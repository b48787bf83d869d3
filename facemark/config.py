"""Training configuration: YAML files mapped onto dataclasses, checked when they are loaded.

An unknown key, a value of the wrong type or out of range (the annotations below, enforced by
pydantic) and model arguments the model does not take are each a one-line :class:`ConfigError`
naming the key, the value and what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import Field

from facemark.checkpoint import check_model_args
from facemark.data.dataset import Augment
from facemark.geometry import CropRule
from facemark.losses import LOSSES
from facemark.models.registry import _MODELS  # the registry has no public accessor for a constructor
from facemark.schemes import YAMLFileError, load_yaml, parse_yaml


class ConfigError(ValueError):
    pass


AtLeastOne = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
LearningRate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]  # Adam above 1 only diverges


@dataclass
class TrainConfig:
    # data: a folder made by `facemark data prepare` (holding train/ and val/ stores)
    data: str = "data/300w-lite"
    out: str = "runs/seed"
    # model
    model: str = "seed_senet"
    model_args: dict[str, Any] = field(default_factory=dict)
    input_size: AtLeastOne = 128
    crop: CropRule = field(default_factory=CropRule)
    augment: Augment | None = None  # None: the recipe's plain crops
    # optimisation (defaults are the seed recipe)
    loss: str = ""  # empty: the model's default loss
    batch_size: AtLeastOne = 64
    steps: AtLeastOne = 150_000
    lr: LearningRate = 1e-3
    schedule: Literal["exponential", "cosine", "step"] = "exponential"
    lr_decay: Fraction = 0.98  # exponential: x lr_decay every lr_decay_steps; step: x0.1 at lr_milestones
    lr_decay_steps: AtLeastOne = 1000
    lr_milestones: list[Fraction] = field(default_factory=lambda: [0.6, 0.85])  # fractions of steps
    warmup_steps: NonNegative = 0
    # L2 penalty on conv/linear weights added to the loss, as in the recipe
    l2: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 1e-5
    # bookkeeping
    val_every: AtLeastOne = 1000
    ckpt_every: AtLeastOne = 1000
    log_every: AtLeastOne = 50
    seed: NonNegative = 0
    num_threads: NonNegative = 0  # 0: torch's default
    workers: NonNegative = 0  # DataLoader worker processes
    bf16: bool = False  # bf16 autocast (GPU only)
    channels_last: bool = False  # NHWC model and input: faster steps on CPU (docs/training.md)
    time_limit_min: NonNegativeFloat = 0.0  # stop cleanly (with a checkpoint) after this many minutes; 0: no limit
    scheme: str = ""  # a point-scheme YAML file (--scheme); empty: the data's (prepare --scheme) or the point count's
    init: str = ""  # start from these weights: "default", "default-5" (shipped models) or a .pt; empty: random
    init_partial: bool = False  # init even when most backbone tensors do not match (another architecture)
    # a second prepared folder (its train/ store, same point count) mixed into every batch, e.g. faces
    # pseudo-labelled by a teacher (tools/pseudo_label.py); extra_fraction of each batch comes from it
    extra_data: str = ""
    extra_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    # exponential moving average of the weights (decay per step; 0: off): validation, best.pt and the
    # exported model use the averaged weights, resuming keeps both
    ema: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    # distillation: a teacher checkpoint ("default" or a .pt of the same crop rule and point count,
    # any input size) whose flip-tested points (the crop and its mirror, averaged) on every training
    # crop are mixed into the targets: target = (1 - teacher_weight) * label + teacher_weight * teacher
    # (the teacher's points alone where a label is missing); teacher_flip: average the mirrored crop too
    teacher: str = ""
    teacher_weight: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5
    teacher_flip: bool = True


_NESTED = {"crop": CropRule, "augment": Augment}
_TYPES = pydantic.TypeAdapter(TrainConfig)  # types and ranges from the annotations, nested ones too


def _check_keys(cls, values, error, parent: str = "") -> None:
    if not isinstance(values, dict):
        raise error(parent, f"{parent + ': ' if parent else ''}expected a mapping, got {type(values).__name__}")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in fields:
            raise error(f"{parent}.{key}" if parent else key,
                        f"{parent + ': ' if parent else ''}unknown key '{key}' (known: {', '.join(fields)})")
        if key in _NESTED and value is not None:
            _check_keys(_NESTED[key], value, error, key)


_KEY = re.compile(r"([A-Za-z_][\w.]*) =")  # the dotted key an error message starts with ("crop.top = ...")


def config_from_dict(values: dict, where: str = "config", overrides: dict[str, str] | None = None) -> TrainConfig:
    """A checked :class:`TrainConfig`; :class:`ConfigError` ``"<where>: <key> = <value>: <what is allowed>"`` otherwise.
    ``overrides``: ``{dotted key: "--set key=value"}`` for the values given on the command line; an
    error in one of them names it (``--set batch_size=-3: ...``) instead of ``where``."""
    def error(key: str, text: str) -> ConfigError:
        match = _KEY.match(text)
        key = key or (match.group(1) if match else "")
        blamed = [flag for k, flag in (overrides or {}).items()
                  if key and (k == key or k.startswith(key + ".") or key.startswith(k + "."))]
        return ConfigError(f"{', '.join(blamed) or where}: {text}")

    values = values or {}
    _check_keys(TrainConfig, values, error)
    try:
        config = _TYPES.validate_python(values)
    except pydantic.ValidationError as err:
        e = err.errors()[0]
        own = e.get("ctx", {}).get("error")  # CropRule's and Augment's own checks name their key
        if isinstance(own, ValueError):
            raise error("", str(own)) from None
        key = ".".join(map(str, e["loc"]))
        raise error(key, f"{key} = {e.get('input')!r}: {e['msg']}") from None
    if config.loss and config.loss not in LOSSES:
        raise error("loss", f"loss = {config.loss!r}: unknown loss (known: {', '.join(LOSSES)}, or empty "
                            "for the model's default)")
    try:  # as training builds it: the input size comes from the config unless model_args sets it
        args = check_model_args(config.model, {"input_size": config.input_size, **config.model_args})
    except ValueError as err:
        raise error("", str(err)) from None
    config.model_args = {key: args[key] for key in config.model_args}
    if bool(config.extra_data) != bool(config.extra_fraction):
        raise error("extra_data", f"extra_data = {config.extra_data!r}, extra_fraction = {config.extra_fraction!r}: "
                                  "set both (a folder and the share of each batch it gives) or neither")
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (None: the defaults); ``overrides`` are ``key=value`` strings (YAML values,
    dotted keys), named in the error when one of them is the value at fault."""
    origins = {item.partition("=")[0]: f"--set {item}" for item in overrides or []}
    if path is None:
        return config_from_dict(_apply_overrides({}, overrides), "defaults", origins)
    return config_from_dict(read_values(path, overrides), str(path), origins)


def read_values(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The raw values of a YAML config file with ``key=value`` overrides applied (not yet checked)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:  # plain YAML: an alias bomb is refused while parsing, before anything is built or checked
        values = load_yaml(path, "config") or {}
    except YAMLFileError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(values).__name__}")
    return _apply_overrides(values, overrides)


def _apply_overrides(values: dict, overrides: list[str] | None) -> dict:
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: not key=value")
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                target[parent] = {}
            target = target[parent]
        try:
            target[leaf] = parse_yaml(raw, f"--set {item}")
        except YAMLFileError as err:
            raise ConfigError(str(err)) from None
    return values


def settable_keys(config: TrainConfig) -> list[str]:
    """Every key ``--set`` accepts for ``config``: top-level fields, ``crop.*``, ``augment.*`` and the
    ``model_args.*`` that ``config.model``'s constructor takes."""
    keys = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NESTED:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(_NESTED[f.name])]
        elif f.name == "model_args":
            params = inspect.signature(_MODELS[config.model]).parameters.values()
            keys += [f"model_args.{p.name}" for p in params
                     if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in ("num_points", "input_size")]
        else:
            keys.append(f.name)
    return keys


def describe_config(path: str | Path | None, overrides: list[str] | None = None) -> str:
    """``facemark train --print-config``: the resolved config as YAML, then the keys ``--set`` accepts."""
    config = load_config(path, overrides)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    keys = "\n".join(f"#   {key}" for key in settable_keys(config))
    return f"{text}\n# keys --set accepts (KEY=VALUE, the value in YAML; augment: null turns augmentation off):\n{keys}\n"


def config_to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)

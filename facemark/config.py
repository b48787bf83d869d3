"""Training configuration: YAML files mapped onto dataclasses; an unknown key is an error naming it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facemark.data.dataset import Augment
from facemark.geometry import CropRule


class ConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    # data: a folder made by `facemark data prepare` (holding train/ and val/ stores)
    data: str = "data/300w-lite"
    out: str = "runs/seed"
    # model
    model: str = "seed_senet"
    model_args: dict[str, Any] = field(default_factory=dict)
    input_size: int = 128
    crop: CropRule = field(default_factory=CropRule)
    augment: Augment | None = None  # None: the recipe's plain crops
    # optimisation (defaults are the seed recipe)
    loss: str = ""  # empty: the model's default loss
    batch_size: int = 64
    steps: int = 150_000
    lr: float = 1e-3
    schedule: str = "exponential"  # exponential | cosine | step
    lr_decay: float = 0.98  # exponential: x lr_decay every lr_decay_steps; step: x0.1 at lr_milestones
    lr_decay_steps: int = 1000
    lr_milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])  # fractions of steps
    warmup_steps: int = 0
    l2: float = 1e-5  # L2 penalty on conv/linear weights added to the loss, as in the recipe
    # bookkeeping
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    num_threads: int = 0  # 0: torch's default
    workers: int = 0  # DataLoader worker processes
    bf16: bool = False  # bf16 autocast (GPU only)
    channels_last: bool = False  # NHWC model and input: ~25 % faster steps on CPU
    time_limit_min: float = 0.0  # stop cleanly (with a checkpoint) after this many minutes; 0: no limit


_NESTED = {"crop": CropRule, "augment": Augment}


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(fields)})")
        if key in _NESTED and value is not None:
            value = _build(_NESTED[key], value, f"{where}.{key}")
        elif isinstance(value, list) and key == "scale":
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    return _build(TrainConfig, values or {}, where)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` are ``key=value`` strings (YAML values, dotted keys)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}' is not key=value")
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            if target.get(parent) is None:
                target[parent] = {}
            target = target[parent]
        target[leaf] = yaml.safe_load(raw)
    return config_from_dict(values, str(path))


def config_to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)

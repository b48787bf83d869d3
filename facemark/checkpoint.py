"""Checkpoints: one self-describing dict, written atomically, loaded with ``weights_only=True``.

A checkpoint carries everything needed to rebuild the model and its preprocessing (model name
and arguments, point scheme, input size, crop rule), so export and inference never guess.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from facemark.files import atomic_path
from facemark.geometry import CropRule
from facemark.models import create_model


class CheckpointError(RuntimeError):
    pass


def checkpoint_state(model: torch.nn.Module, model_name: str, model_args: dict, crop: CropRule, **extra) -> dict:
    """The self-describing checkpoint dict: weights, how to rebuild the model, its crop rule."""
    from facemark import __version__

    return {
        "model": model.state_dict(),
        "model_name": model_name,
        "model_args": dict(model_args),
        "crop": crop.to_dict(),
        "scheme": str(model_args["num_points"]),
        "facemark_version": __version__,
        **extra,
    }


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated ({err.__class__.__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{path}: not a facemark checkpoint (no model weights or model name)")
    return state


def model_from_checkpoint(state: dict | str | Path) -> tuple[torch.nn.Module, CropRule]:
    """Rebuild the model (eval mode) and its crop rule from a checkpoint dict or path."""
    if not isinstance(state, dict):
        state = load_checkpoint(state)
    model = create_model(state["model_name"], **state["model_args"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, CropRule(**state["crop"])

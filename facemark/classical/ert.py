"""dlib's ensemble of regression trees (Kazemi & Sullivan 2014) on facemark's standard crops.

A model is two files: dlib's ``model.dat`` and its model card ``model.dat.json`` (what the
``.dat`` cannot hold: point count, crop size, crop rule, the face rectangle it was trained with,
training data and config). :class:`ErtRunner` is the inference half; training (through dlib's
imglab XML) is in :mod:`facemark.classical.train`.

dlib works in integer pixels: its training XML holds integer coordinates and its predictor
returns integer points, so the crop is larger than the CNNs' (``input_size`` 256 in
``configs/ert.yaml``) to keep that rounding well below the model's error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facemark.geometry import CropRule, landmark_box_in_crop

FORMAT = "facemark-ert-1"


def card_path(model_path: str | Path) -> Path:
    """The model card beside a ``.dat``: ``model.dat`` -> ``model.dat.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def face_rect(input_size: int, rule: CropRule) -> tuple[int, int, int, int]:
    """dlib rectangle ``(left, top, right, bottom)``, inclusive pixel indices (pixel centres), of
    the landmark box in an ``input_size`` crop: the same rectangle in training and inference."""
    x0, y0, x1, y1 = (round(v * input_size - 0.5) for v in landmark_box_in_crop(rule))
    return x0, y0, x1, y1


def import_dlib():
    try:
        import dlib
    except ImportError:
        raise ImportError("ERT models need dlib: `pip install facemark[dlib]` (the dlib-bin wheel)") from None
    return dlib


class ErtRunner:
    """uint8 BGR crops ``(B, S, S, 3)`` -> ``(B, K, 2)`` points in 0..1 of the crop."""

    def __init__(self, path: str | Path, meta: dict | None = None):
        path, card = Path(path), card_path(path)
        if meta is None and not card.is_file():
            raise FileNotFoundError(f"{card}: model card missing; an ERT .dat needs the .dat.json that "
                                    "`facemark train --method ert` writes beside it")
        self.meta = meta if meta is not None else json.loads(card.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{card}: not a facemark ERT model card (format {self.meta.get('format')!r})")
        dlib = import_dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))
        self.input_size = int(self.meta["input_size"])
        self._rect = dlib.rectangle(*face_rect(self.input_size, CropRule(**self.meta["crop"])))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected crops (B, {self.input_size}, {self.input_size}, 3), got {crops.shape}")
        out = np.empty((len(crops), int(self.meta["num_points"]), 2), np.float32)
        for i, crop in enumerate(crops):
            rgb = np.ascontiguousarray(crop[..., ::-1])  # dlib trained on RGB files (grey inside)
            shape = self._predictor(rgb, self._rect)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return (out + 0.5) / self.input_size  # pixel centres -> 0..1 of the crop

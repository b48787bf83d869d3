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
    quality        optional: the point-score and fit-quality calibration (facemark.quality,
                   fitted by ``python -m bench.fit_quality``); absent in older files, which then
                   give ``Face.point_scores = Face.quality = None``

Files written before the spec had ``scheme``, ``mean`` and ``std`` load with the values those
models used (the point count's scheme, the model's ``mean`` buffer, std 1). Torch-free, so the
ONNX path of the API never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from facemark.geometry import CropRule

#: The ONNX metadata key holding the spec (JSON).
METADATA_KEY = "facemark"
DEFAULT_MEAN = (0.5, 0.5, 0.5)  # the recipe's fixed per-channel mean; BatchNorm after the stem does the scale
DEFAULT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ModelSpec:
    model_name: str
    model_args: dict = field(hash=False)
    input_size: int
    crop: CropRule
    scheme: str | dict = field(hash=False)  # a built-in scheme's name, or a custom scheme's mapping
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    quality: dict | None = field(default=None, hash=False, compare=False)  # facemark.quality calibration

    @property
    def num_points(self) -> int:
        return int(self.model_args["num_points"])

    @property
    def point_scheme(self):
        """The :class:`~facemark.schemes.PointScheme` the model was trained with."""
        from facemark.schemes import resolve_scheme

        return resolve_scheme(self.scheme, self.num_points)

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
        }

    @classmethod
    def from_dict(cls, data: dict, mean=None) -> "ModelSpec":
        """The spec in a checkpoint or ONNX metadata dict; ``mean`` fills it in for files written
        before the spec carried one (a checkpoint's ``mean`` buffer)."""
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
        )


def _scheme_value(value) -> str | dict:
    return dict(value) if isinstance(value, dict) else str(value)


def read_onnx_metadata(path: str | Path) -> dict:
    """The facemark metadata dict of an exported ONNX file (spec + provenance)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: ONNX file has no facemark metadata; export it with `facemark export`")
    return json.loads(props[METADATA_KEY])

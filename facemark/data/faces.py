"""Annotated faces from wherever they are: a store, a prepared folder, a dataset folder, a list.

:func:`load_faces` is how evaluation, INT8 calibration, the fitting functions of
:mod:`facemark.calibrate` and the benchmarks get their faces: each a :class:`FaceSample` that
points at its *original* image (never the stored crop)::

    faces, skipped, text = load_faces("data/300w-lite", "val")   # the prepared folder's val store
    faces, skipped, text = load_faces("../shared/data/300w-lite", "train")   # the fixed split of a dataset

A model's record of the faces it was trained on (:func:`training_record`, written by
:func:`facemark.train.train` into the checkpoint's ``trained_on`` and copied by export) lets
evaluation count how many of the faces it scores the model has seen (:func:`seen_in_training`).
Faces are matched by sample id (the annotation file's path under its dataset root, e.g.
``lfpw/trainset/image_0331``), so a face is known whatever folder, store or copy it is read from;
the record holds a short hash of each id (:func:`face_key`), not the ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from facemark.data.formats import read_dataset
from facemark.data.prepare import split_samples
from facemark.data.record import FaceSample
from facemark.data.store import Store, check_prepared


def _resolve_image(path: str, store_path: Path) -> str:
    """A store records the image path as given to ``prepare`` (often relative to where it ran):
    try it as is, then relative to the folders above the store."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    for base in store_path.resolve().parents[:3]:
        if (base / p).exists():
            return str(base / p)
    return str(p)


def load_faces(data, split: str = "val") -> tuple[list[FaceSample], list[dict], str]:
    """Faces, the annotation files skipped while reading them, and a description.

    ``data``: a :class:`Store`, a store folder, a prepared folder (its ``<split>`` store), a
    dataset folder (``read_dataset`` + the fixed ``split_samples`` split; ``split="all"`` keeps
    every face) or a list of :class:`FaceSample`.
    """
    if isinstance(data, (list, tuple)):
        return list(data), [], f"{len(data)} given faces"
    if not isinstance(data, Store):
        path = Path(data)
        if (path / "index.json").is_file():
            data = Store.open(path, verify=False)
        elif (path / split / "index.json").is_file():
            check_prepared(path)  # split.json, train/ and val/ from one prepare run
            data = Store.open(path / split, verify=False)
    if isinstance(data, Store):
        faces = [
            FaceSample(_resolve_image(e["image"], data.path), np.asarray(data.points[i]), e.get("dataset", ""),
                       e.get("subset", ""), e["id"], None if e.get("visible") is None else np.asarray(e["visible"]))
            for i, e in enumerate(data.samples)
        ]
        return faces, [], f"store {data.path}"
    samples, bad = read_dataset(path, skip_bad=True)
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if split != "all":
        train, val = split_samples(samples)
        samples = train if split == "train" else val
    skipped = [{"id": Path(p).stem, "file": p, "reason": f"annotation: {reason}"} for p, reason in bad]
    return samples, skipped, f"{path} ({split} split)"


# --------------------------------------------------------------------------- what a model was trained on

#: hex digits of sha256(sample id) kept per face: 48 bits, so a chance match between two different
#: faces is about 1e-5 for 100,000 training faces against 1,000 evaluated ones
KEY_HEX = 12


def face_key(sample_id: str) -> str:
    """The short hash by which a training record knows a face (its sample id)."""
    return hashlib.sha256(str(sample_id).encode()).hexdigest()[:KEY_HEX]


def training_record(stores: list[Store], earlier: dict | None = None) -> dict:
    """The ``trained_on`` record of a model trained on ``stores``: each store's path, checksum,
    prepare id and face count, and the sorted :func:`face_key` of every face. ``earlier``: the record
    of the checkpoint the weights started from (``config.init``), whose faces the model has seen too."""
    keys = {face_key(e["id"]) for store in stores for e in store.samples}
    record = {"stores": [{"path": str(s.path), "checksum": s.index.get("checksum"), "prepared": s.index.get("prepared"),
                          "faces": len(s)} for s in stores]}
    if earlier is not None:
        keys |= set(earlier.get("face_keys", []))
        record["init"] = {k: earlier[k] for k in ("stores", "init") if k in earlier}
    return {**record, "faces": len(keys), "face_keys": sorted(keys)}


def seen_in_training(record, sample_ids: Iterable[str]) -> list[str] | None:
    """The ``sample_ids`` that the ``trained_on`` ``record`` holds; None when there is no usable record
    (files written before it, classical models, a record that is not a list of keys)."""
    keys = record.get("face_keys") if isinstance(record, dict) else None
    if not isinstance(keys, list):
        return None
    known = {k for k in keys if isinstance(k, str)}
    return [i for i in sample_ids if face_key(i) in known]

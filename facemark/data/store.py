"""The packed store: decoded, cropped faces in memory-mappable ``.npy`` files plus a JSON index.

Why ``.npy`` memmaps rather than LMDB or TFRecords: the whole 300w-lite set is a few hundred MB,
numpy reads a random batch from a memmap with one fancy-index (no per-record decode, no extra
dependency), and every worker process shares the page cache.

A store folder holds::

    images.npy   uint8 (M, S, S, 3) BGR: the square region around each face (see below)
    points.npy   float32 (M, K, 2) landmarks in original-image pixels (0-based pixel centres)
    index.json   per sample: id, subset, source image, image size, region box; checksum; scheme

Each stored image is a square *region* of the original photo: the recipe's (unclipped) crop box,
made square and grown by ``context`` so that augmentation (rotation, scale, box jitter) has real
pixels to draw on. The final crop is always cut later by :mod:`facemark.geometry`, from the
landmark points, so the store never fixes the model's crop rule or input size.

Stores are written into a temporary folder and renamed into place only when complete, so an
interrupted ``prepare`` never leaves a store that loads. Every sample is checked on the way in:
its image must decode completely (:func:`facemark.images.read_image`: truncated files are refused)
and its points must be finite in float32 and near the image
(:func:`facemark.data.record.check_points`), so nothing that would poison training gets stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facemark.data.record import DataError, FaceSample, check_points
from facemark.files import remove_stale_temporaries, replace_folder, write_atomic
from facemark.geometry import CropRule, box_from_points, crop_affine, crop_box_from_box, crop_image
from facemark.images import MAX_PIXELS, ImageError, read_image
from facemark.schemes import scheme_from_spec, spec_value

STORE_VERSION = 1
REGION_RULE = CropRule(clip=False)


def region_box(points: np.ndarray, context: float) -> tuple[float, float, float, float]:
    """Square region (edge coordinates) centred on the recipe crop box and ``context`` times its larger side."""
    left, top, right, bottom = crop_box_from_box(box_from_points(points), None, REGION_RULE)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = max(right - left, bottom - top) * context / 2
    return cx - half, cy - half, cx + half, cy + half


def _checksum(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_dataset_image(path: str | Path, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None) -> np.ndarray:
    """Decode a dataset's image file to BGR uint8 (:func:`facemark.images.read_image`, with its caps),
    raising :class:`DataError` naming it."""
    try:
        return read_image(path, max_pixels, max_bytes)
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except ImageError as err:
        raise DataError(path, err.reason) from None


def write_store(
    samples: list[FaceSample],
    out_dir: str | Path,
    size: int = 192,
    context: float = 1.5,
    skip_bad: bool = False,
    seed: int = 0,
    progress: bool = True,
    scheme=None,
    prepared: str | None = None,
    relocate: tuple[Path, Path] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = None,
) -> tuple[Path, list[tuple[str, str]]]:
    """Decode, crop and pack ``samples`` into a store at ``out_dir``.

    ``scheme``: a custom :class:`~facemark.schemes.PointScheme` (``--scheme my.yaml``), recorded in the
    index; without one the store's scheme is the built-in one of its point count.
    ``prepared``: the id of the prepare run (``split.json`` records it too, :func:`check_prepared`);
    ``relocate = (from, to)``: image paths under ``from`` (a folder being built) are recorded under ``to``.
    Samples are written in a seeded shuffled order. Returns the store path and the list of
    ``(path, reason)`` for samples that were skipped (only with ``skip_bad``; otherwise the first
    bad sample raises :class:`DataError`). ``max_pixels``, ``max_bytes``: the image caps (:mod:`facemark.images`).
    """
    out_dir = Path(out_dir)
    if not samples:
        raise ValueError(f"no samples to write to {out_dir}")
    num_points = len(samples[0].points)
    if scheme is not None and scheme.num_points != num_points:
        raise DataError(scheme.source or "--scheme", f"scheme {scheme.name!r} has {scheme.num_points} points, the data "
                                                    f"({samples[0].image_path}, ...) {num_points}")
    order = np.random.default_rng(seed).permutation(len(samples))
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    remove_stale_temporaries(tmp_dir.parent)  # stores whose writer was killed
    try:
        images = np.lib.format.open_memmap(tmp_dir / "images.npy", "w+", np.uint8, (len(samples), size, size, 3))
        points = np.lib.format.open_memmap(tmp_dir / "points.npy", "w+", np.float32, (len(samples), num_points, 2))
        entries, skipped = [], []
        for i in tqdm(order, desc=f"packing {out_dir.name}", unit="face", disable=not progress):
            sample = samples[i]
            try:
                if len(sample.points) != num_points:
                    raise DataError(sample.image_path, f"expected {num_points} points, found {len(sample.points)}")
                image = read_dataset_image(sample.image_path, max_pixels, max_bytes)
                check_points(sample.points, sample.image_path, image_size=(image.shape[1], image.shape[0]))
                region = region_box(sample.points, context)
            except ValueError as err:  # DataError, or the crop rule refusing a degenerate face
                if not isinstance(err, DataError):
                    err = DataError(sample.image_path, str(err))
                if not skip_bad:
                    raise err from None
                skipped.append((sample.image_path, err.reason))
                continue
            row = len(entries)
            images[row] = crop_image(image, region, size)
            points[row] = sample.points
            entries.append({
                "id": sample.sample_id,
                "subset": sample.subset,
                "dataset": sample.dataset,
                "image": _recorded_path(sample.image_path, relocate),
                "image_size": [int(image.shape[1]), int(image.shape[0])],
                "region": [float(v) for v in region],
                "visible": None if sample.visible is None else sample.visible.astype(int).tolist(),
            })
        images.flush()
        points.flush()
        del images, points
        if not entries:
            raise DataError(out_dir, "every sample was skipped; nothing to store")
        if len(entries) < len(samples):  # shrink to the rows actually written
            for name in ("images.npy", "points.npy"):
                kept = np.load(tmp_dir / name, mmap_mode="r")[: len(entries)]
                np.save(tmp_dir / f"{name}.part", np.ascontiguousarray(kept))
                del kept
                os.replace(tmp_dir / f"{name}.part.npy", tmp_dir / name)
        index = {
            "version": STORE_VERSION,
            "num_samples": len(entries),
            "num_points": num_points,
            "size": size,
            "context": context,
            "checksum": _checksum(tmp_dir / "images.npy", tmp_dir / "points.npy"),
            "samples": entries,
        }
        if scheme is not None:
            index["scheme"] = spec_value(scheme)
        if prepared is not None:
            index["prepared"] = prepared
        write_atomic(tmp_dir / "index.json", json.dumps(index))
        replace_folder(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir, skipped


def _recorded_path(path, relocate: tuple[Path, Path] | None) -> str:
    if relocate is not None and Path(path).is_relative_to(relocate[0]):
        return str(relocate[1] / Path(path).relative_to(relocate[0]))
    return str(path)


def check_prepared(folder: str | Path) -> None:
    """A prepared folder's ``split.json``, ``train/`` and ``val/`` must come from one ``prepare`` run:
    each records its ``prepared`` id (folders prepared before the id: none at all, accepted).
    :class:`DataError` naming the folder when they disagree (a folder mixed by an interrupted copy)."""
    folder = Path(folder)
    ids = {}
    for name, index in (("split.json", folder / "split.json"), ("train/", folder / "train" / "index.json"),
                        ("val/", folder / "val" / "index.json")):
        if index.is_file():
            try:
                ids[name] = json.loads(index.read_text()).get("prepared")
            except (ValueError, AttributeError):
                raise DataError(index, "not a facemark index (invalid JSON)") from None
    if len(set(ids.values())) > 1:
        listed = ", ".join(f"{name} {value or 'none'}" for name, value in ids.items())
        raise DataError(folder, f"split.json, train/ and val/ come from different `facemark data prepare` runs "
                                f"(prepared ids: {listed}); prepare it again")


@dataclass
class Store:
    """A read-only view of a packed store (memory-mapped)."""

    path: Path
    images: np.ndarray  # (M, S, S, 3) uint8 BGR, memmap
    points: np.ndarray  # (M, K, 2) float32 original pixels
    index: dict

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Store:
        path = Path(path)
        index_path = path / "index.json"
        if not index_path.is_file():
            raise DataError(path, "not a facemark store (index.json missing); run `facemark data prepare`")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(index_path, f"index is not valid JSON: {err}") from None
        if index.get("version") != STORE_VERSION:
            raise DataError(index_path, f"store version {index.get('version')} is not {STORE_VERSION}; prepare again")
        if verify and _checksum(path / "images.npy", path / "points.npy") != index["checksum"]:
            raise DataError(path, "checksum mismatch: the store is damaged; prepare it again")
        images = np.load(path / "images.npy", mmap_mode="r")
        points = np.load(path / "points.npy", mmap_mode="r")
        if len(images) != index["num_samples"] or len(points) != index["num_samples"]:
            raise DataError(path, "arrays and index disagree on the number of samples")
        return cls(path, images, points, index)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_points(self) -> int:
        return int(self.index["num_points"])

    @property
    def scheme(self):
        """The store's :class:`~facemark.schemes.PointScheme`: the one recorded by ``prepare --scheme``
        (a built-in name or the full mapping, never a path), else the built-in one of its point count."""
        return scheme_from_spec(self.index.get("scheme"), self.num_points, f"{self.path / 'index.json'}: scheme")

    @property
    def samples(self) -> list[dict]:
        return self.index["samples"]

    def region_affine(self, i: int) -> np.ndarray:
        """2x3 matrix mapping original pixel centres of sample ``i`` to store-image pixel centres."""
        return crop_affine(tuple(self.samples[i]["region"]), int(self.index["size"]))


def convert_stores(sources: list[str | Path], out_dir: str | Path, convert=None, size: int | None = None,
                   progress: bool = True) -> Path:
    """One store at ``out_dir`` holding every sample of the stores ``sources``, in their order.

    ``convert`` maps ``(M, K, 2)`` points to another scheme's (:data:`facemark.schemes.CONVERSIONS`;
    None keeps them), so ``facemark data convert --to 5pt`` turns 68-point stores into 5-point ones
    and merges datasets (cuhk-5pt + 300w-lite) into one training store. Regions stay as they were
    (the crop is cut later from the new points); images are resized to ``size`` (default: the first
    store's) so stores prepared at different sizes can be merged.
    """
    stores = [Store.open(path) for path in sources]
    size = int(size or stores[0].index["size"])
    converted = [np.asarray(convert(np.asarray(s.points)) if convert else s.points, dtype=np.float32) for s in stores]
    if len({p.shape[1] for p in converted}) != 1:
        raise DataError(out_dir, f"stores {[str(s.path) for s in stores]} have different point counts "
                                 f"{[p.shape[1] for p in converted]}: convert them to one scheme (--to)")
    out_dir = Path(out_dir)
    total = sum(len(s) for s in stores)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(tmp_dir / "images.npy", "w+", np.uint8, (total, size, size, 3))
        row, entries = 0, []
        for store in stores:
            for i in tqdm(range(len(store)), desc=f"converting {store.path}", unit="face", disable=not progress):
                image = store.images[i]
                images[row] = image if image.shape[0] == size else cv2.resize(
                    np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)
                row += 1
            entries += [dict(e, visible=None) if convert else dict(e) for e in store.samples]
        images.flush()
        del images
        np.save(tmp_dir / "points.npy", np.concatenate(converted))
        index = {
            "version": STORE_VERSION, "num_samples": total, "num_points": int(converted[0].shape[1]), "size": size,
            "context": stores[0].index.get("context"), "sources": [str(s.path) for s in stores],
            "checksum": _checksum(tmp_dir / "images.npy", tmp_dir / "points.npy"), "samples": entries,
        }
        recorded = [s.index.get("scheme") for s in stores]
        if not convert and recorded[0] is not None and all(r == recorded[0] for r in recorded):
            index["scheme"] = recorded[0]  # the sources' custom scheme, unchanged
        write_atomic(tmp_dir / "index.json", json.dumps(index))
        replace_folder(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir

"""``facemark data prepare``: read a dataset folder, split it, pack one store per split.

The split is deterministic and keyed by a stable id, so it never changes when files are added
elsewhere: each face goes to validation when ``sha1(seed:group)`` falls in the lowest
``val_fraction`` of the hash range. ``group`` is the source photo (the sample id without its
``_<face number>`` suffix of one or two digits), so two faces of one photo never straddle the split.

The whole output folder is built beside its target (``.<name>.tmp-<pid>``) and switched in with one
rename (:func:`facemark.files.replace_folder`), so an interrupted run (``kill -9``) leaves the
previous folder as it was. ``split.json`` and both stores record one ``prepared`` id, which
training and evaluation check (:func:`facemark.data.store.check_prepared`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from facemark.data.formats import FORMATS, detect_format, read_dataset
from facemark.data.record import DataError, FaceSample
from facemark.data.store import write_store
from facemark.files import remove_stale_temporaries, replace_folder, write_atomic
from facemark.images import MAX_PIXELS

SPLIT_SEED = "facemark-v1"
#: what a prepared folder holds; prepare replaces a folder only when it holds nothing else
PREPARED_NAMES = frozenset({"split.json", "skipped.txt", "train", "val", "images"})


def split_group(sample_id: str) -> str:
    return re.sub(r"_\d{1,2}$", "", sample_id)  # "helen/x/123_2" -> "helen/x/123"; "image_0001" stays


def is_validation(sample_id: str, val_fraction: float = 0.2, seed: str = SPLIT_SEED) -> bool:
    digest = hashlib.sha1(f"{seed}:{split_group(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def split_samples(samples: list[FaceSample], val_fraction: float = 0.2, seed: str = SPLIT_SEED):
    train = [s for s in samples if not is_validation(s.sample_id, val_fraction, seed)]
    val = [s for s in samples if is_validation(s.sample_id, val_fraction, seed)]
    return train, val


def prepare(
    root: str | Path,
    out: str | Path,
    size: int = 192,
    context: float = 1.5,
    val_fraction: float = 0.2,
    skip_bad: bool = False,
    progress: bool = True,
    train_on_all: bool = False,
    format: str | None = None,
    images: str | Path | None = None,
    scheme=None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = None,
) -> dict:
    """Prepare ``out/train`` and ``out/val`` stores from the annotations under ``root``.

    ``format`` and ``images``: see :func:`~facemark.data.formats.read_dataset` (the format is
    detected when unambiguous; ``cuhk-5pt`` keeps the lists' own split: the training list becomes
    ``train``, the testing list ``val``); COFW's embedded images are extracted to ``images``, by default
    ``out/images``, where the stores and the evaluation find them.

    ``scheme``: a custom point scheme (a :class:`~facemark.schemes.PointScheme` or a YAML path),
    checked against the point count and recorded in both stores. ``max_pixels``, ``max_bytes``: the
    caps every image is decoded within (:mod:`facemark.images`; ``facemark --max-mpx``, ``--max-mb``).

    Returns a summary: counts per split, and every skipped file with its reason (also written to
    ``out/skipped.txt``). Nothing is dropped silently: without ``skip_bad`` a bad file raises.
    ``train_on_all``: the train store holds every face (validation ones too), for a final model
    trained once its recipe has been chosen on the split; the val store is still the fixed
    validation split, so its figures then only monitor training (they are not held out).
    """
    root, out = Path(root), Path(out)
    _check_replaceable(out)
    if images is None and (format == "cofw" or (format is None and detect_format(root) == "cofw")):
        images = out / "images"
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent)  # what a killed prepare left
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if images is not None and Path(images).resolve().is_relative_to(out.resolve()):  # extracted images: built too
        images = tmp / Path(images).resolve().relative_to(out.resolve())
    try:
        summary = _prepare_into(tmp, out, root, size, context, val_fraction, skip_bad, progress, train_on_all, format,
                                images, scheme, max_pixels, max_bytes)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _check_replaceable(out: Path) -> None:
    """Refuse an output folder that holds anything prepare did not write (a dataset, someone's files)."""
    if out.exists() and not out.is_dir():
        raise DataError(out, "the output exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in PREPARED_NAMES and not p.name.startswith("."))
        if foreign:
            raise DataError(out, f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                                 "`facemark data prepare` did not write; prepare replaces the whole folder, so give "
                                 "a new or empty --out")


def _prepare_into(tmp: Path, out: Path, root: Path, size, context, val_fraction, skip_bad, progress, train_on_all,
                  format, images, scheme, max_pixels=MAX_PIXELS, max_bytes=None) -> dict:
    """:func:`prepare`'s work, written into ``tmp``; the stores record image paths as they will be under ``out``."""
    samples, skipped = read_dataset(root, skip_bad=skip_bad, format=format, images=images)
    if not samples:
        raise FileNotFoundError(f"{root}: no annotated faces found ({', '.join(FORMATS)})")
    if format == "cuhk-5pt":  # the CUHK release's own split: new_training.txt -> train, new_testing.txt -> val
        train = [s for s in samples if s.subset == "train"]
        val = [s for s in samples if s.subset != "train"]
    else:
        train, val = split_samples(samples, val_fraction)
    if train_on_all:
        train = list(samples)
    prepared = uuid.uuid4().hex  # one id in split.json and both stores: they belong together
    manifest = {
        "root": str(root),
        "prepared": prepared,
        "rule": ("the CUHK lists' own split: new_training.txt -> train, new_testing.txt -> val" if format == "cuhk-5pt"
                 else f"validation when sha1('{SPLIT_SEED}:<photo id>') < {val_fraction} of the hash range")
                + ("; train holds every face (--train-on-all)" if train_on_all else ""),
        "train": [s.sample_id for s in train],
        "val": [s.sample_id for s in val],
    }
    write_atomic(tmp / "split.json", json.dumps(manifest, indent=1))
    counts = {}
    for name, subset in (("train", train), ("val", val)):
        if not subset:
            raise ValueError(f"{root}: the {name} split is empty ({len(samples)} faces in all)")
        _, bad = write_store(subset, tmp / name, size=size, context=context, skip_bad=skip_bad, progress=progress,
                             scheme=scheme, prepared=prepared, relocate=(tmp, out), max_pixels=max_pixels,
                             max_bytes=max_bytes)
        skipped += bad
        counts[name] = len(subset) - len(bad)
    write_atomic(tmp / "skipped.txt", "".join(f"{path}\t{reason}\n" for path, reason in skipped))
    return {"faces": sum(counts.values()), "skipped": skipped, **counts}

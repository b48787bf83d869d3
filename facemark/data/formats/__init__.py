"""Annotation-format readers and writers; every reader yields 0-based pixel-centre FaceSamples."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from facemark.data.formats.cofw import read_cofw_mat
from facemark.data.formats.cuhk import CUHK_LISTS, read_cuhk_list
from facemark.data.formats.dlib_xml import read_dlib_xml, write_dlib_xml
from facemark.data.formats.mat import read_mat_300wlp
from facemark.data.formats.pts import find_image, read_pts, read_pts_sample, sample_names, write_pts
from facemark.data.formats.wflw import WFLW_ATTRIBUTES, read_wflw_list
from facemark.data.record import DataError, FaceSample
from facemark.extras import require

__all__ = [
    "CUHK_LISTS", "FORMATS", "WFLW_ATTRIBUTES", "detect_format", "find_image", "read_cofw_mat", "read_cuhk_list",
    "read_dataset", "read_dlib_xml", "read_mat_300wlp",
    "read_pts", "read_pts_sample", "read_wflw_list", "write_dlib_xml", "write_pts",
]

# Formats with one face per file and the image beside it are found by walking a folder; WFLW lists,
# COFW and dlib XML are one file holding every face.
_READERS = {".pts": read_pts_sample, ".mat": read_mat_300wlp}
#: ``--format`` names: one face per file (a folder is walked) or one file for the whole dataset
FORMATS = ("pts", "mat", "wflw", "cofw", "dlib-xml", "cuhk-5pt")


def detect_format(root: str | Path) -> str | None:
    """The format of ``root`` when it is unambiguous: a folder of ``.pts`` or ``.mat`` files (not both;
    :func:`read_dataset` reads a mixed folder's both kinds), a ``.xml`` (dlib), a ``.txt`` (a WFLW list)
    or an HDF5 ``.mat`` file (COFW); None otherwise."""
    root = Path(root)
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".xml":
            return "dlib-xml"
        if suffix == ".txt":
            return "wflw"
        if suffix == ".mat":
            return "cofw" if require("h5py", "reading .mat files").is_hdf5(root) else None
        return None
    kinds = set()
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        kinds.update(Path(name).suffix.lower()[1:] for name in files if Path(name).suffix.lower() in _READERS)
        if len(kinds) > 1:
            return None
    return kinds.pop() if kinds else None


def read_dataset(root: str | Path, skip_bad: bool = False, format: str | None = None,
                 images: str | Path | None = None) -> tuple[list[FaceSample], list[tuple[str, str]]]:
    """Read the faces of a dataset in any supported ``format`` (:data:`FORMATS`; None: :func:`detect_format`).

    ``pts`` / ``mat``: every ``.pts`` / 300W-LP ``.mat`` annotation under the folder ``root``, each
    with its image beside it; ``wflw``: the list file ``root``, image names relative to ``images``
    (default: the list's folder); ``cofw``: the MATLAB file ``root``, its embedded images extracted
    to ``images`` (needed); ``dlib-xml``: the XML file ``root``, image paths relative to it;
    ``cuhk-5pt``: a CUHK list file, or a folder holding ``new_training.txt`` and ``new_testing.txt``
    (both read; each sample's ``subset`` is its list's split, ``train`` or ``val``), image names
    relative to ``images`` (default: the list's folder).
    Samples are sorted by sample id.

    With ``skip_bad`` a bad file is listed as ``(path, reason)`` instead of stopping the whole
    read, so one broken download does not block training on the rest; the caller decides whether
    the skip list is acceptable. Files with an annotation suffix that are not regular files (a FIFO,
    a device) are always skipped and listed: reading one would block. Every face must have the same number of points: a file whose count
    differs from the most common one is bad (a 67-point ``.pts`` among 68-point ones).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such file or folder")
    walk = (".pts", ".mat") if format is None and root.is_dir() else (f".{format}",)  # a folder: both, as ever
    format = format or detect_format(root) or ("pts" if root.is_dir() else None)
    if format not in FORMATS:
        raise DataError(root, "cannot tell the annotation format: pass --format "
                              f"({', '.join(FORMATS)})" if format is None else f"unknown format {format!r} ({', '.join(FORMATS)})")
    cuhk_folder = format == "cuhk-5pt" and root.is_dir()
    if format in ("pts", "mat") and not root.is_dir():
        raise DataError(root, f"a {format} dataset is a folder of .{format} files")
    if format not in ("pts", "mat") and not root.is_file() and not cuhk_folder:
        raise DataError(root, f"a {format} dataset is one annotation file")
    found, skipped = [], []

    def bad(path: Path, err: DataError) -> None:
        if not skip_bad:
            raise err
        skipped.append((str(path), err.reason if err.line is None else f"line {err.line}: {err.reason}"))

    if format == "wflw":
        found = [(root, s) for s in read_wflw_list(root, images if images is not None else root.parent)]
    elif format == "cofw":
        if images is None:
            raise DataError(root, "COFW images are embedded: give a folder to extract them to (--images)")
        found = [(root, s) for s in read_cofw_mat(root, images)]
    elif format == "cuhk-5pt":
        lists = [root / name for name in CUHK_LISTS] if cuhk_folder else [root]
        for path in lists:
            if not path.is_file():
                raise DataError(path, "no such CUHK list (a cuhk-5pt folder holds " + " and ".join(CUHK_LISTS) + ")")
            found += [(path, s) for s in read_cuhk_list(path, images if images is not None else path.parent)]
    elif format == "dlib-xml":
        found = [(root, s) for s in read_dlib_xml(root)]
    for folder, dirs, files in os.walk(root) if format in ("pts", "mat") else ():
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() not in walk or name.startswith("."):
                continue
            reader = _READERS[Path(name).suffix.lower()]
            path = Path(folder) / name
            if not path.is_file():  # a FIFO named x.pts would block the reader for ever
                skipped.append((str(path), "not a regular file (a FIFO, device or socket); skipped"))
                continue
            try:
                sample = reader(path)
            except DataError as err:
                bad(path, err)
                continue
            sample.dataset, sample.subset, sample.sample_id = sample_names(path, root)
            found.append((path, sample))
    counts = Counter(len(sample.points) for _, sample in found)
    common = counts.most_common(1)[0][0] if counts else 0
    samples = []
    for path, sample in found:
        if len(sample.points) != common:
            bad(path, DataError(path, f"{len(sample.points)} points, but the other {counts[common]} "
                                      f"annotations have {common}"))
            continue
        samples.append(sample)
    samples.sort(key=lambda s: s.sample_id)
    return samples, skipped

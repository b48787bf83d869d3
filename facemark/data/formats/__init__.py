"""Annotation-format readers and writers; every reader yields 0-based pixel-centre FaceSamples."""

from __future__ import annotations

import os
from pathlib import Path

from facemark.data.formats.cofw import read_cofw_mat
from facemark.data.formats.dlib_xml import read_dlib_xml, write_dlib_xml
from facemark.data.formats.mat import read_mat_300wlp
from facemark.data.formats.pts import find_image, read_pts, read_pts_sample, sample_names, write_pts
from facemark.data.formats.wflw import WFLW_ATTRIBUTES, read_wflw_list
from facemark.data.record import DataError, FaceSample

__all__ = [
    "WFLW_ATTRIBUTES", "find_image", "read_cofw_mat", "read_dataset", "read_dlib_xml", "read_mat_300wlp",
    "read_pts", "read_pts_sample", "read_wflw_list", "write_dlib_xml", "write_pts",
]

# Only formats with one face per file and the image beside it are discovered by walking; WFLW
# lists, COFW and dlib XML need an image root or output folder, so they are read explicitly.
_READERS = {".pts": read_pts_sample, ".mat": read_mat_300wlp}


def read_dataset(root: str | Path, skip_bad: bool = False) -> tuple[list[FaceSample], list[tuple[str, str]]]:
    """Read every ``.pts`` / 300W-LP ``.mat`` annotation under ``root``, sorted by sample id.

    With ``skip_bad`` a bad file is listed as ``(path, reason)`` instead of stopping the whole
    read, so one broken download does not block training on the rest; the caller decides whether
    the skip list is acceptable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a directory")
    samples, skipped = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            reader = _READERS.get(Path(name).suffix.lower())
            if reader is None or name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                sample = reader(path)
            except DataError as e:
                if not skip_bad:
                    raise
                skipped.append((str(path), e.reason if e.line is None else f"line {e.line}: {e.reason}"))
                continue
            sample.dataset, sample.subset, sample.sample_id = sample_names(path, root)
            samples.append(sample)
    samples.sort(key=lambda s: s.sample_id)
    return samples, skipped

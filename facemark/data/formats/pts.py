"""300-W ``.pts`` annotations: 1-based pixel coordinates on disk, 0-based pixel centres in memory."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.record import DataError, FaceSample, check_points
from facemark.files import write_atomic
from facemark.images import IMAGE_SUFFIXES, ImageError, image_size


@reader
def read_pts(path: str | Path, expected_points: int | None = None,
             image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ``.pts`` file, with the ``version/n_points/{ }`` header or as bare ``x y`` lines.

    Headerless files exist in the wild (exports of other tools), so both are accepted; the header,
    when present, is enforced (``n_points`` must match and ``}`` must close the list) because a
    mismatch there is how truncated downloads show up. With the image's ``(width, height)``, points
    far outside it are refused (:func:`~facemark.data.record.check_points`); errors name the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a text file ({e.reason})") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(path, "empty file")
    if lines[0][1].lower().startswith("version"):
        points = _points_after_header(path, lines)
    else:
        points = [(n, *_xy(path, s, n)) for n, s in lines]
    numbers = [n for n, _, _ in points]
    xy = np.array([(x, y) for _, x, y in points], dtype=np.float64).reshape(-1, 2) - 1.0
    return check_points(xy, path, expected_points, image_size=image_size, lines=numbers)


def _points_after_header(path: Path, lines: list[tuple[int, str]]) -> list[tuple[int, float, float]]:
    rest = iter(lines)
    n_points = None
    for lineno, s in rest:
        if s == "{":
            break
        key, sep, value = s.partition(":")
        if not sep:
            raise DataError(path, f"expected a 'key: value' header line or '{{', got {s!r}", lineno)
        if key.strip().lower() == "n_points":
            try:
                n_points = int(value)
            except ValueError:
                raise DataError(path, f"n_points is not an integer: {value.strip()!r}", lineno) from None
    else:
        raise DataError(path, "truncated file: no '{' after the header", lineno)
    if n_points is None:
        raise DataError(path, "header has no n_points", lineno)
    points = []
    for lineno, s in rest:
        if s == "}":
            break
        points.append((lineno, *_xy(path, s, lineno)))
    else:
        raise DataError(path, "truncated file: no closing '}'", lineno)
    if len(points) != n_points:
        raise DataError(path, f"header says n_points: {n_points} but {len(points)} points are listed", lineno)
    trailing = next(rest, None)
    if trailing is not None:
        raise DataError(path, f"unexpected text after '}}': {trailing[1]!r}", trailing[0])
    return points


def _xy(path: Path, s: str, lineno: int) -> tuple[float, float]:
    fields = s.split()
    if len(fields) != 2:
        raise DataError(path, f"expected 'x y', got {s!r}", lineno)
    try:
        x, y = float(fields[0]), float(fields[1])
    except ValueError:
        raise DataError(path, f"non-numeric value in {s!r}", lineno) from None
    if math.isnan(x) and math.isnan(y):  # a missing point (partial labels), kept as NaN
        return x, y
    if not (math.isfinite(x) and math.isfinite(y)):
        raise DataError(path, f"NaN or infinite value in {s!r}", lineno)
    return x, y


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write the 300-W header format (1-based, 3 decimals, as the 300-W release does)."""
    check_points(points, path)
    body = "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in np.asarray(points, dtype=np.float64))
    write_atomic(path, f"version: 1\nn_points:  {len(points)}\n{{\n{body}}}\n".encode())


@reader
def find_image(annotation_path: str | Path) -> Path:
    """The non-empty image with the annotation's stem beside it, in any format OpenCV reads
    (:data:`facemark.images.IMAGE_SUFFIXES`, in that order of preference; any case).

    Only existence and size are checked: decoding every image here would make listing a dataset
    slow, and undecodable files are caught when the store is built.
    """
    path = Path(annotation_path)
    candidates = [path.with_suffix(s) for suffix in IMAGE_SUFFIXES for s in (suffix, suffix.upper())]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:  # mixed-case suffixes such as ".Jpg"
        pattern = os.path.join(glob.escape(str(path.parent)), glob.escape(path.stem) + ".*")
        found = next((Path(p) for p in sorted(glob.glob(pattern))
                      if Path(p).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(p)), None)
    if found is None:
        raise DataError(path, f"no image beside it ({path.stem} with {'/'.join(IMAGE_SUFFIXES[:3])}/... "
                              "or another format OpenCV reads)")
    if found.stat().st_size == 0 or not os.access(found, os.R_OK):
        raise DataError(path, f"image {found.name} is empty or unreadable")
    return found


def sample_names(path: str | Path, root: str | Path | None) -> tuple[str, str, str]:
    """``(dataset, subset, sample_id)`` of an annotation file found under ``root``.

    The dataset is root's folder name and the subset the first folder below it, because that is
    how 300-W style trees are laid out (``300w-lite/helen/trainset/x.pts``); the id keeps the
    whole relative path so that equal file names in different subsets stay distinct.
    """
    path = Path(path)
    if root is None:
        return "", "", path.stem
    rel = Path(os.path.relpath(path, root))
    subset = rel.parts[0] if len(rel.parts) > 1 else ""
    return Path(os.path.abspath(root)).name, subset, rel.with_suffix("").as_posix()


@reader
def read_pts_sample(path: str | Path, root: str | Path | None = None) -> FaceSample:
    """The face of one ``.pts`` file and the image beside it; points far outside the image are refused."""
    image = find_image(path)
    points = read_pts(path, image_size=image_size_of(image))
    dataset, subset, sample_id = sample_names(path, root)
    return FaceSample(str(image), points, dataset=dataset, subset=subset, sample_id=sample_id)


def image_size_of(image: Path) -> tuple[int, int] | None:
    """The ``(width, height)`` of an annotation's image from its header; None when the header cannot
    be read, because an undecodable image is refused, under its own name, when it is decoded."""
    try:
        return image_size(image)
    except ImageError:
        return None

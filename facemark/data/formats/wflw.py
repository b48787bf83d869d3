"""WFLW annotation lists: one face per line, 0-based pixel coordinates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.record import DataError, FaceSample, check_points

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
_NUM_POINTS = 98
_NUM_FIELDS = 2 * _NUM_POINTS + 4 + len(WFLW_ATTRIBUTES) + 1


@reader
def read_wflw_list(path: str | Path, image_root: str | Path) -> list[FaceSample]:
    """Read ``list_98pt_rect_attr_*.txt``: 196 coordinates, box x0 y0 x1 y1, 6 flags, image name.

    Images with several faces appear on several lines, so sample ids get a per-image face number
    (``_1``, ``_2``, ... as in 300-W file names).
    """
    path, image_root = Path(path), Path(image_root)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    samples, faces_per_image = [], Counter()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=_NUM_FIELDS - 1)  # the image name may hold spaces
        if len(fields) != _NUM_FIELDS:
            raise DataError(path, f"expected {_NUM_FIELDS} fields (196 coordinates, 4 box values, "
                                  f"6 attributes, image name), found {len(fields)}", lineno)
        values = []
        for field in fields[:-1]:
            try:
                values.append(float(field))
            except ValueError:
                raise DataError(path, f"non-numeric value {field!r}", lineno) from None
        points = check_points(np.reshape(values[:196], (_NUM_POINTS, 2)), path, _NUM_POINTS, lineno)
        box = tuple(values[196:200])
        if not (np.abs(box) <= np.finfo(np.float32).max).all():  # False for NaN too
            raise DataError(path, "box contains NaN, infinite or out-of-range values", lineno)
        flags = values[200:206]
        if any(v not in (0.0, 1.0) for v in flags):
            raise DataError(path, f"attribute flags must be 0 or 1, got {fields[200:206]}", lineno)
        name = fields[-1]
        image = image_root / name
        if not image.is_file():
            raise DataError(path, f"image not found: {image}", lineno)
        faces_per_image[name] += 1
        samples.append(FaceSample(
            str(image), points, dataset="wflw", subset=path.stem,
            sample_id=f"{Path(name).with_suffix('').as_posix()}_{faces_per_image[name]}",
            box=box, attributes={k: int(v) for k, v in zip(WFLW_ATTRIBUTES, flags)},
        ))
    return samples

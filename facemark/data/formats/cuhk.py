"""CUHK facial point lists (Sun, Wang & Tang, CVPR 2013): ``<image> x1 x2 x3 x4 x5 y1 y2 y3 y4 y5``.

One face per line, every x first then every y, in pixels of the listed image (an 80 x 80 crop in
the shared copy, 0-based pixel centres as far as the format says). The five points are in the order
of :mod:`facemark.schemes`' 5-point scheme: image-left eye centre, image-right eye centre, nose tip,
image-left and image-right mouth corners. A few points lie slightly outside their crop (negative
values): they are kept as they are (the store pads), only non-numbers and points far outside are bad.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.record import DataError, FaceSample, check_points

_NUM_POINTS = 5
#: the lists of the CUHK release, and the split of each (``facemark data prepare`` keeps this split)
CUHK_LISTS = {"new_training.txt": "train", "new_testing.txt": "val"}


@reader
def read_cuhk_list(path: str | Path, image_root: str | Path | None = None) -> list[FaceSample]:
    """Read one CUHK list; image names are relative to ``image_root`` (default: the list's folder).

    Sample ids are the image names without suffix (``AFLW/0001-image20056``); ``subset`` is the
    list's split (``train`` for ``new_training.txt``, ``val`` for ``new_testing.txt``, else its stem).
    """
    path = Path(path)
    image_root = Path(image_root) if image_root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    subset = CUHK_LISTS.get(path.name, path.stem)
    samples, seen = [], set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 1 + 2 * _NUM_POINTS:
            raise DataError(path, f"expected an image name and {2 * _NUM_POINTS} coordinates "
                                  f"(x1..x5 y1..y5), found {len(fields)} fields", lineno)
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(path, f"non-numeric coordinate in {fields[1:]}", lineno) from None
        points = check_points(np.stack([values[:_NUM_POINTS], values[_NUM_POINTS:]], axis=1), path, _NUM_POINTS, lineno)
        name = fields[0]
        if name in seen:
            raise DataError(path, f"image {name} listed twice", lineno)
        seen.add(name)
        image = image_root / name
        if not image.is_file():
            raise DataError(path, f"image not found: {image}", lineno)
        samples.append(FaceSample(str(image), points, dataset="cuhk-5pt", subset=subset,
                                  sample_id=Path(name).with_suffix("").as_posix()))
    return samples

"""The raw data of the custom-scheme example (docs/data.md): 12 of the 68 points of 100 lfpw faces.

Copies the first ``--faces`` lfpw photos of the shared 300w-lite folder and writes beside each a
300-W ``.pts`` file holding the 12 points of ``brows_eyes_mouth.yaml`` (68-point indices 17, 21,
22, 26, 36, 39, 42, 45, 30, 48, 54, 8), through facemark's own reader and writer::

    python examples/scheme_demo/make_raw.py --out data/scheme_demo/raw

The source is ``$FACEMARK_SHARED/data/300w-lite`` (default ``../shared``) unless ``--source`` names it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from facemark.data.formats import read_pts, write_pts

#: the 68-point index of each of the scheme's 12 points, in its order (its ``pose:`` list)
POINTS = (17, 21, 22, 26, 36, 39, 42, 45, 30, 48, 54, 8)


def main(argv=None) -> int:
    shared = Path(os.environ.get("FACEMARK_SHARED", "../shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=shared / "data" / "300w-lite", help="the 300w-lite folder")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (images and .pts files)")
    ap.add_argument("--faces", type=int, default=100, help="how many lfpw faces")
    args = ap.parse_args(argv)
    annotations = sorted((args.source / "lfpw" / "trainset").glob("*.pts"))[: args.faces]
    if not annotations:
        ap.error(f"{args.source / 'lfpw' / 'trainset'}: no .pts files (give --source the 300w-lite folder)")
    args.out.mkdir(parents=True, exist_ok=True)
    for pts in annotations:
        image = pts.with_suffix(".jpg")
        shutil.copyfile(image, args.out / image.name)
        write_pts(args.out / pts.name, read_pts(pts)[list(POINTS)])
    print(f"{len(annotations)} faces with {len(POINTS)} points each -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the 3D mean face that head pose is solved against; writes ``facemark/assets/mean_face_68.json``.

From AFLW2000-3D ``.mat`` files (``pt3d_68``: 68 points with depth, image pixels, z toward the
camera): each face is put in OpenCV camera axes (z negated: x right, y down, z away from the
camera) and :func:`facemark.calibrate.fit_mean_face` aligns them by generalised Procrustes (rotation,
uniform scale, translation; Umeyama 1991), makes the mean left-right symmetric (averaged with its
mirror image under the 68-point flip permutation) and turns it to the frontal frame: x along the
outer eye and mouth corners (image left to image right), y from the eyes to the mouth and chin
(down), z = x × y (away from the camera), origin at the nose tip, scaled so the outer eye corners
are 90 units apart; last, it is turned about x so that the median face of the 300w-lite training
split has pitch 0. Yaw and roll agree with AFLW2000-3D's own pose annotation within a few degrees
on its samples up to 55 degrees of yaw.

Why pitch zero comes from 300w-lite: the points fed to head pose are 300-W-style annotations
(facemark's models predict those), whose jaw and brows sit differently from AFLW2000-3D's projected
3D points: calibrating on AFLW2000's own Pose_Para instead leaves 300-W faces 14 degrees "down" at
the median.

    python -m bench.fit_mean_face [--data ../shared/data/format-samples/aflw2000-3d] [--calibrate-on ../shared/data/300w-lite]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench import DEFAULT_ROOT, SHARED
from facemark.calibrate import fit_mean_face, median_pitch
from facemark.data.faces import load_faces
from facemark.extras import require
from facemark.files import write_atomic
from facemark.images import image_size
from facemark.pose import MEAN_FACE_FILE

DEFAULT_DATA = SHARED / "data" / "format-samples" / "aflw2000-3d"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--calibrate-on", type=Path, default=DEFAULT_ROOT,
                    help="300-W-style dataset whose training split's median face defines pitch zero")
    ap.add_argument("--out", type=Path, default=MEAN_FACE_FILE)
    args = ap.parse_args(argv)
    loadmat = require("scipy.io", "reading AFLW2000-3D .mat files").loadmat
    shapes = [loadmat(f)["pt3d_68"].T.astype(np.float64) * [1.0, 1.0, -1.0] for f in sorted(args.data.glob("*.mat"))]
    if len(shapes) < 5:
        print(f"{args.data}: {len(shapes)} faces with pt3d_68; need at least 5", file=sys.stderr)
        return 1
    faces = [(np.asarray(s.points, np.float64), image_size(s.image_path)) for s in load_faces(args.calibrate_on, "train")[0]]
    face = fit_mean_face(shapes, faces)
    print(f"median pitch on {len(faces)} training faces: {median_pitch(face, faces):+.2f} deg", file=sys.stderr)
    data = {
        "about": f"3D mean face for head pose, fitted by facemark.calibrate.fit_mean_face (python -m bench.fit_mean_face) "
                 f"from {len(shapes)} AFLW2000-3D faces ({args.data.name}); OpenCV camera axes: x to the image right, "
                 "y down, z away from the camera; origin at the nose tip (point 30); outer eye corners 90 units apart; "
                 "left-right symmetric; turned about x so the median face of the 300w-lite training split has pitch 0.",
        "points": np.round(face, 2).tolist(),
    }
    rows = ",\n  ".join(json.dumps(p) for p in data["points"])  # one point per line
    write_atomic(args.out, f'{{\n "about": {json.dumps(data["about"])},\n "points": [\n  {rows}\n ]\n}}\n')
    print(f"wrote {args.out} ({len(shapes)} faces)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

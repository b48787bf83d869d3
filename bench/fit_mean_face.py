"""Fit the 3D mean face that head pose is solved against; writes ``facemark/assets/mean_face_68.json``.

From AFLW2000-3D ``.mat`` files (``pt3d_68``: 68 points with depth, image pixels, z toward the
camera): each face is put in OpenCV camera axes (z negated: x right, y down, z away from the
camera), all faces are aligned by generalised Procrustes (rotation, uniform scale, translation;
Umeyama 1991), the mean is made left-right symmetric (averaged with its mirror image under the
68-point flip permutation) and turned to the frontal frame: x along the outer eye and mouth
corners (image left to image right), y from the eyes to the mouth and chin (down), z = x × y
(away from the camera), origin at the nose tip, scaled so the outer eye corners are 90 units apart;
last, it is turned about x so that the median face of the 300w-lite training split has pitch 0
(the points head pose sees are 300-W-style; see ``main``). Yaw and roll agree with AFLW2000-3D's
own pose annotation within a few degrees on its samples up to 55 degrees of yaw.

    python -m bench.fit_mean_face [--data ../shared/data/format-samples/aflw2000-3d] [--calibrate-on ../shared/data/300w-lite]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from facemark.files import write_atomic
from facemark.pose import MEAN_FACE_FILE
from facemark.schemes import get_scheme

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "format-samples" / "aflw2000-3d"
DEFAULT_CALIBRATION = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w-lite"
EYE_CORNERS_APART = 90.0


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` (N, 3) moved onto ``dst`` by the least-squares similarity (no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return scale * s @ rotation.T + mu_d


def frontal_frame(shape: np.ndarray) -> np.ndarray:
    """``shape`` in the frontal frame of the module docstring."""
    x = (shape[45] - shape[36]) + (shape[54] - shape[48]) + (shape[16] - shape[0])
    x /= np.linalg.norm(x)
    y = (shape[8] + shape[57]) / 2 - (shape[36] + shape[45]) / 2
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    axes = np.stack([x, y, np.cross(x, y)])  # rows: the new axes in the old frame
    out = (shape - shape[30]) @ axes.T
    return out * EYE_CORNERS_APART / np.linalg.norm(out[45] - out[36])


def mean_face(shapes: list[np.ndarray]) -> np.ndarray:
    flip = list(get_scheme(68).flip_perm)
    mean = shapes[0]
    for _ in range(10):  # generalised Procrustes: align all to the mean, re-average
        mean = np.mean([umeyama(s, mean) for s in shapes], axis=0)
        mean = frontal_frame(mean)
    mirrored = mean[flip] * [-1.0, 1.0, 1.0]
    return frontal_frame((mean + umeyama(mirrored, mean)) / 2)


def rotate_x(shape: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return shape @ rx.T


def median_pitch(face_file: Path, faces: list[tuple[np.ndarray, tuple[int, int]]]) -> float:
    """Median pitch (degrees) of ``[(points, image size)]`` solved against the mean face in ``face_file``."""
    from facemark import pose

    pose.MEAN_FACE_FILE = face_file
    pose.mean_face.cache_clear()
    return float(np.median([pose.head_pose(points, size)[1] for points, size in faces]))


def main(argv=None) -> int:
    from scipy.io import loadmat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--calibrate-on", type=Path, default=DEFAULT_CALIBRATION,
                    help="300-W-style dataset whose training split's median face defines pitch zero")
    ap.add_argument("--out", type=Path, default=MEAN_FACE_FILE)
    args = ap.parse_args(argv)
    files = sorted(args.data.glob("*.mat"))
    shapes = [loadmat(f)["pt3d_68"].T.astype(np.float64) * [1.0, 1.0, -1.0] for f in files]
    if len(shapes) < 5:
        print(f"{args.data}: {len(shapes)} faces with pt3d_68; need at least 5", file=sys.stderr)
        return 1
    face = mean_face(shapes)
    if face[30, 2] > face[36, 2]:
        raise RuntimeError("the nose tip lies behind the eyes: the data's depth axis is not what this script expects")
    # pitch zero: the median face of the 300w-lite TRAINING split looks straight at the camera. The
    # points fed to head pose are 300-W-style annotations (facemark's models predict those), whose
    # jaw and brows sit differently from AFLW2000-3D's projected 3D points: calibrating on AFLW2000's
    # own Pose_Para instead leaves 300-W faces 14 degrees "down" at the median.
    from facemark.evaluate import load_faces
    from facemark.files import image_size

    faces = [(np.asarray(s.points, np.float64), image_size(s.image_path)) for s in load_faces(args.calibrate_on, "train")[0]]
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "face.json"
        for _ in range(3):
            write_atomic(trial, json.dumps({"points": face.tolist()}))
            face = rotate_x(face, -median_pitch(trial, faces))  # R_x(-pitch) of the pose module, about the nose tip
        write_atomic(trial, json.dumps({"points": face.tolist()}))
        print(f"median pitch on {len(faces)} training faces: {median_pitch(trial, faces):+.2f} deg", file=sys.stderr)
    data = {
        "about": f"3D mean face for head pose, fitted by bench/fit_mean_face.py from {len(shapes)} AFLW2000-3D faces "
                 f"({args.data.name}); OpenCV camera axes: x to the image right, y down, z away from the camera; "
                 "origin at the nose tip (point 30); outer eye corners 90 units apart; left-right symmetric; "
                 "turned about x so the median face of the 300w-lite training split has pitch 0.",
        "points": np.round(face, 2).tolist(),
    }
    rows = ",\n  ".join(json.dumps(p) for p in data["points"])  # one point per line
    write_atomic(args.out, f'{{\n "about": {json.dumps(data["about"])},\n "points": [\n  {rows}\n ]\n}}\n')
    print(f"wrote {args.out} ({len(shapes)} faces)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pseudo-label five-point faces with 68 points: a teacher model's points, pinned to the real five.

For each face of a cuhk-5pt list (or any five-point store), the teacher (a 68-point model) predicts
from the face's box estimated from its five points (turned upright by its eye line), then again
from the box of its own points (flip test on). The face is kept when the teacher's five points
(eye centres = means of 36-41 / 42-47, nose tip 30, mouth corners 48, 54) agree with the real ones
(eye-centre NME <= ``--max-disagreement``); its 68 points are then moved onto the real five: an
affine map of the teacher's five onto the real five (least squares) for the whole face, then each
eye shifted so its mean is the real eye centre, and the nose tip and mouth corners set to theirs.
The result is a prepared folder whose ``train/`` store ``facemark train`` can mix in (config
``extra_data``, ``extra_fraction``)::

    python -m tools.pseudo_label --teacher runs/twin_old/best.pt \\
        --list ../shared/data/cuhk-5pt/new_training.txt --out data/cuhk68-twin

The teacher must not have trained on faces you will score the student on (for the split-trained
twin: a split-trained teacher). ``report.json`` in the output lists the counts and every face left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemark.api import Landmarker
from facemark.data.formats.cuhk import read_cuhk_list
from facemark.data.store import read_dataset_image, write_store
from facemark.files import write_atomic
from facemark.geometry import apply_affine, box_centre, box_from_points, upright_turn
from facemark.schemes import FIVE_FROM_68_BOX, get_scheme, to_five


def box_68_from_five(points5: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
    """The 68-point landmark box of the face turned upright by its eye line, and the roll, from five points
    (:data:`facemark.schemes.FIVE_FROM_68_BOX` inverted)."""
    right, left = points5[0], points5[1]
    roll = float(np.degrees(np.arctan2(-(left[1] - right[1]), left[0] - right[0])))
    centre = box_centre(box_from_points(points5))
    x0, y0, x1, y1 = box_from_points(apply_affine(upright_turn(centre, roll), points5))
    f = FIVE_FROM_68_BOX
    w, h = (x1 - x0) / (f[2] - f[0]), max(y1 - y0, 0.3 * (x1 - x0)) / (f[3] - f[1])
    left68, top68 = x0 - f[0] * w, y0 - f[1] * h
    return (left68, top68, left68 + w, top68 + h), roll


def pin_to_five(points: np.ndarray, real5: np.ndarray) -> np.ndarray:
    """``(68, 2)`` points moved onto the real five points (affine fit, then exact eye means, nose tip, mouth corners)."""
    mine = to_five(points).astype(np.float64)
    design = np.hstack([mine, np.ones((5, 1))])  # (5, 3)
    affine, *_ = np.linalg.lstsq(design, real5.astype(np.float64), rcond=None)  # (3, 2)
    out = np.hstack([points, np.ones((len(points), 1))]) @ affine
    out[36:42] += real5[0] - out[36:42].mean(0)
    out[42:48] += real5[1] - out[42:48].mean(0)
    out[30], out[48], out[54] = real5[2], real5[3], real5[4]
    return out.astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="68-point model (.pt or .onnx)")
    ap.add_argument("--list", type=Path, required=True, help="a cuhk-5pt list (new_training.txt)")
    ap.add_argument("--out", type=Path, required=True, help="prepared folder to write (its train/ store)")
    ap.add_argument("--max-disagreement", type=float, default=0.08,
                    help="largest eye-centre NME between the teacher's five points and the real ones")
    ap.add_argument("--size", type=int, default=128, help="stored region size in pixels")
    args = ap.parse_args(argv)
    if not 0 < args.max_disagreement < 1:
        ap.error(f"--max-disagreement must be in (0, 1), got {args.max_disagreement}")
    teacher = Landmarker(args.teacher)
    if teacher.num_points != 68:
        ap.error(f"{args.teacher}: the teacher must be a 68-point model, it has {teacher.num_points}")
    five = get_scheme(5)
    samples = read_cuhk_list(args.list)
    kept, left_out = [], []
    for sample in tqdm(samples, desc="pseudo-labels", unit="face"):
        real = np.asarray(sample.points, np.float64)
        image = read_dataset_image(sample.image_path)
        box, roll = box_68_from_five(real)
        first = teacher.predict_batch([image], [[box]], flip=False, rolls=[[roll]])[0][0]
        box, roll = teacher.placement(first)
        points = teacher.predict_batch([image], [[box]], rolls=[[roll]])[0][0]
        disagreement = float(np.linalg.norm(to_five(points) - real, axis=1).mean()
                             / np.linalg.norm(real[five.outer_eye_corners[0]] - real[five.outer_eye_corners[1]]))
        if not np.isfinite(disagreement) or disagreement > args.max_disagreement:
            left_out.append({"id": sample.sample_id, "disagreement": round(disagreement, 4)})
            continue
        kept.append(replace(sample, points=pin_to_five(points, real), dataset="cuhk-5pt-pseudo68"))
    if not kept:
        print(f"no face agreed with its five points within {args.max_disagreement}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    write_store(kept, args.out / "train", size=args.size)
    report = {"teacher": str(args.teacher), "list": str(args.list), "faces": len(samples), "kept": len(kept),
              "max_disagreement": args.max_disagreement, "left_out": left_out}
    write_atomic(args.out / "report.json", json.dumps(report, indent=1))
    print(f"{len(kept)} of {len(samples)} faces kept ({len(left_out)} disagreed with their five points by more than "
          f"{args.max_disagreement:.0%} of the eye-centre distance) -> {args.out / 'train'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Keep the five-point faces whose labelled eyes are where a face detector sees the eyes.

In the shared copy of the cuhk-5pt training list, about 40 % of the ``net_7876`` faces have points
that lie off the face in their 80 x 80 crop (another crop's coordinates). This runs BlazeFace (which
never saw these faces or 300-W) on each crop, scaled x3, and keeps the face when its labelled eye
centres are within ``--max-distance`` of the eye-centre distance of BlazeFace's eye keypoints; the
kept faces, with their own five points, become a prepared folder's ``train/`` store::

    python -m tools.check_five_labels --list ../shared/data/cuhk-5pt/new_training.txt --out data/five-cuhk-checked

``report.json`` in the output lists the counts and every face left out (no face found, or how far off).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facemark.data.formats.cuhk import read_cuhk_list
from facemark.data.store import read_dataset_image, write_store
from facemark.detectors import get_detector
from facemark.files import write_atomic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", type=Path, required=True, help="a cuhk-5pt list (new_training.txt)")
    ap.add_argument("--out", type=Path, required=True, help="prepared folder to write (its train/ store)")
    ap.add_argument("--max-distance", type=float, default=0.25,
                    help="largest distance of a labelled eye centre from the detector's, in eye-centre distances")
    ap.add_argument("--size", type=int, default=96, help="stored region size in pixels")
    ap.add_argument("--context", type=float, default=3.0, help="stored region around the crop box")
    args = ap.parse_args(argv)
    detector = get_detector("blazeface", tiles=False, fallback=None)  # BlazeFace's own eye keypoints only
    kept, left_out = [], []
    for sample in tqdm(read_cuhk_list(args.list), desc="checking", unit="face"):
        image = read_dataset_image(sample.image_path)
        big = cv2.resize(image, (image.shape[1] * 3, image.shape[0] * 3), interpolation=cv2.INTER_LINEAR)
        eyes = np.asarray(sample.points[:2], np.float64)
        iod = float(np.linalg.norm(eyes[0] - eyes[1]))
        found = [((d.keypoints[:2] + 0.5) / 3 - 0.5) for d in detector.detect(big)]  # back to the crop's pixels
        off = min((float(np.linalg.norm(k - eyes, axis=1).max()) / max(iod, 1e-6) for k in found), default=None)
        if off is None or off > args.max_distance:
            left_out.append({"id": sample.sample_id, "off": None if off is None else round(off, 3)})
            continue
        kept.append(sample)
    args.out.mkdir(parents=True, exist_ok=True)
    write_store(kept, args.out / "train", size=args.size, context=args.context)
    write_atomic(args.out / "report.json", json.dumps(
        {"list": str(args.list), "faces": len(kept) + len(left_out), "kept": len(kept),
         "max_distance": args.max_distance, "left_out": left_out}, indent=1))
    print(f"{len(kept)} of {len(kept) + len(left_out)} faces kept -> {args.out / 'train'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the 68-point box -> 5-point box mapping and the 5-point model's crop margins on 300w-lite TRAINING faces.

The detector calibrations give the tight box of the 68 points; a 5-point model crops around the
tight box of its five points (facemark.schemes: eye centres = means of 36-41 / 42-47, nose tip 30,
mouth corners 48 and 54). :func:`facemark.calibrate.fit_five_box` fits, over the training faces,

* the mapping ``FIVE_FROM_68_BOX`` (in facemark/schemes.py): the five points' box as fractions of
  the 68-point box (medians); printed with the mean IoU of the mapped box vs the true five-point box;
* the crop margins (top, bottom, side, as fractions of the five-point box) that reproduce the
  68-point model's crop (top 30 %, bottom 5 %, sides 5 % of the 68-point box): the crop rule of
  configs/five_pipnet_resnet_64.yaml.

    python -m bench.fit_five_box [--store data/300w-lite/train]
"""

from __future__ import annotations

import argparse

import numpy as np

from facemark.calibrate import fit_five_box, mean_box_iou
from facemark.data.store import Store
from facemark.geometry import box_from_points
from facemark.schemes import FIVE_FROM_68_BOX, five_from_68_box, to_five


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/300w-lite/train", help="a 68-point store (training split)")
    args = parser.parse_args(argv)
    points = np.asarray(Store.open(args.store).points, dtype=np.float64)
    fit = fit_five_box(points)
    print(f"{len(points)} faces of {args.store}")
    print(f"FIVE_FROM_68_BOX = ({', '.join(f'{v:.4f}' for v in fit['five_from_68_box'])})   "
          f"(in facemark/schemes.py: {FIVE_FROM_68_BOX})")
    mapped = np.array([five_from_68_box(box_from_points(p)) for p in points])
    truth = np.array([box_from_points(p) for p in to_five(points)])
    print(f"mean IoU of the mapped box vs the true five-point box: {mean_box_iou(mapped, truth):.3f}")
    crop = fit["crop"]
    print(f"5-point crop margins that give the 68-point crop: top {crop['top']:.2f}, bottom {crop['bottom']:.2f}, "
          f"side {crop['side']:.2f}")


if __name__ == "__main__":
    main()

"""Fit the 68-point box -> 5-point box mapping and the 5-point model's crop margins on 300w-lite TRAINING faces.

The detector calibrations give the tight box of the 68 points; a 5-point model crops around the
tight box of its five points (facemark.schemes: eye centres = means of 36-41 / 42-47, nose tip 30,
mouth corners 48 and 54). Over the training faces this prints

* the mapping ``FIVE_FROM_68_BOX``: the five points' box as fractions of the 68-point box (medians),
  with the mean IoU of the mapped box vs the true five-point box;
* the crop margins (top, bottom, side, as fractions of the five-point box) that reproduce the
  68-point model's crop (top 30 %, bottom 5 %, sides 5 % of the 68-point box): the crop rule of
  configs/five_pipnet_resnet_64.yaml.

    python -m bench.fit_five_box [--store data/300w-lite/train]
"""

from __future__ import annotations

import argparse

import numpy as np

from facemark.data.store import Store
from facemark.geometry import CropRule
from facemark.schemes import FIVE_FROM_68_BOX, five_from_68_box, to_five


def _boxes(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)  # (N, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(axis=1)
    area = lambda box: (box[:, 2:] - box[:, :2]).prod(axis=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/300w-lite/train", help="a 68-point store (training split)")
    args = parser.parse_args()
    points = np.asarray(Store.open(args.store).points, dtype=np.float64)
    b68, b5 = _boxes(points), _boxes(to_five(points).astype(np.float64))
    w68, h68 = b68[:, 2] - b68[:, 0], b68[:, 3] - b68[:, 1]
    w5, h5 = b5[:, 2] - b5[:, 0], b5[:, 3] - b5[:, 1]
    fit = [np.median((b5[:, 0] - b68[:, 0]) / w68), np.median((b5[:, 1] - b68[:, 1]) / h68),
           np.median((b5[:, 2] - b68[:, 0]) / w68), np.median((b5[:, 3] - b68[:, 1]) / h68)]
    mapped = np.array([five_from_68_box(box) for box in b68])
    print(f"{len(points)} faces of {args.store}")
    print(f"FIVE_FROM_68_BOX = ({', '.join(f'{v:.4f}' for v in fit)})   (in facemark/schemes.py: {FIVE_FROM_68_BOX})")
    print(f"mean IoU of the mapped box vs the true five-point box: {_iou(mapped, b5).mean():.3f}")
    rule = CropRule(clip=False)  # the 68-point model's crop around the 68-point box
    crop = np.stack([b68[:, 0] - rule.side * w68, b68[:, 1] - rule.top * h68,
                     b68[:, 2] + rule.side * w68, b68[:, 3] + rule.bottom * h68], axis=1)
    side = np.median(np.concatenate([(b5[:, 0] - crop[:, 0]) / w5, (crop[:, 2] - b5[:, 2]) / w5]))
    print(f"5-point crop margins that give the 68-point crop: top {np.median((b5[:, 1] - crop[:, 1]) / h5):.2f}, "
          f"bottom {np.median((crop[:, 3] - b5[:, 3]) / h5):.2f}, side {side:.2f}")


if __name__ == "__main__":
    main()

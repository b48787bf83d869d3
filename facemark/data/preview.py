"""``facemark data preview``: a grid of random samples as the model sees them, points drawn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facemark.data.dataset import Augment, LandmarkDataset
from facemark.data.store import Store
from facemark.plots import draw_points, make_grid, write_image


def preview_store(store_path: str | Path, out: str | Path, count: int = 16, size: int = 128,
                  augment: bool = False, seed: int = 0) -> Path:
    dataset = LandmarkDataset(Store.open(store_path), input_size=size, augment=Augment() if augment else None)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    tiles = []
    for i in picks:
        image, points = dataset.sample(int(i), rng if augment else None)
        scale = 2  # draw at double size so 68 points stay legible
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        tiles.append(draw_points(image, points * size * scale - 0.5, (0, 255, 0), radius=2))
    return write_image(out, make_grid(tiles, cols=int(np.ceil(np.sqrt(len(tiles))))))

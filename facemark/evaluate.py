"""Evaluation: run a model over a store and score it with :mod:`facemark.metrics`."""

from __future__ import annotations

import numpy as np
import torch

from facemark.data.dataset import LandmarkDataset
from facemark.geometry import from_crop


def mean_shape(dataset: LandmarkDataset) -> np.ndarray:
    """Average normalised shape ``(K, 2)`` of the dataset's un-augmented crops."""
    shapes = [dataset.sample(i)[1] for i in range(len(dataset))]
    return np.mean(shapes, axis=0).astype(np.float32)


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: LandmarkDataset, batch_size: int = 64) -> np.ndarray:
    """Predictions ``(M, K, 2)`` in original-image pixels for every sample, from its landmark box."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(dataset), batch_size):
        images = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        outputs.append(model.decode(model(images.to(device))).float().cpu().numpy())
    model.train(was_training)
    normalised = np.concatenate(outputs)
    return np.stack([from_crop(p, dataset.crop_box(i)) for i, p in enumerate(normalised)])

"""facemark.data.dataset: training crops, targets, augmentation, and the same crop as inference."""

from __future__ import annotations

import numpy as np
import torch

from facemark.api import Landmarker
from facemark.data.dataset import Augment, LandmarkDataset
from facemark.data.prepare import prepare
from facemark.data.store import Store
from facemark.geometry import CropRule, box_from_points, from_crop
from facemark.images import read_image


def test_dataset_targets_match_crop_rule(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "out", size=128, progress=False)
    dataset = LandmarkDataset(Store.open(tmp_path / "out" / "train"), input_size=64)
    image, target, index = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    points = dataset.store.points[index]
    # the normalised target maps back to the original points through the inverse crop transform
    assert np.abs(from_crop(target.numpy(), dataset.crop_box(index)) - points).max() < 0.01


def test_augmentation_is_reproducible_and_flips_points(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "out", size=128, progress=False)
    store = Store.open(tmp_path / "out" / "train")
    dataset = LandmarkDataset(store, input_size=64, augment=Augment(), seed=3)
    a, b = dataset[5], dataset[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dataset.set_epoch(1)
    assert not torch.equal(a[1], dataset[5][1])
    # the training loader names the epoch in the key: the same draw as set_epoch's
    assert torch.equal(dataset[(1, 5)][1], dataset[5][1]) and torch.equal(dataset[(0, 5)][1], a[1])
    # a pure flip keeps the right eye on the image's left side
    flip_only = LandmarkDataset(store, 64, augment=Augment(0.0, (1.0, 1.0), 0.0, 0.0, True, 0.0, 0.0, 0.0))
    for i in range(4):
        _, target, _ = flip_only[i]
        assert target[36, 0] < target[45, 0]


def test_training_and_inference_crop_the_same_pixels(synthetic_dataset, tmp_path, tiny_checkpoint):
    """The training crop (from the packed store region) and the API's crop (from the original image)
    of one face are the same pixels, not only the same points: one crop rule, one geometry."""
    prepare(synthetic_dataset, tmp_path / "out", size=256, progress=False)  # store regions above the original's resolution
    lm = Landmarker(tiny_checkpoint)  # 64 px input, CropRule(clip=False)
    dataset = LandmarkDataset(Store.open(tmp_path / "out" / "train"), input_size=lm.input_size, crop_rule=lm.crop_rule)
    for i in range(0, len(dataset), 7):
        trained, target = dataset.sample(i)
        entry, points = dataset.store.samples[i], dataset.store.points[i]
        inferred = lm.crop(read_image(entry["image"]), box_from_points(points))
        assert trained.shape == inferred.shape == (64, 64, 3)
        difference = np.abs(trained.astype(int) - inferred.astype(int))
        # a one-pixel shift costs about 5 grey levels on average; resampling the store region costs 0.2-0.3
        assert difference.mean() < 1.0 and np.percentile(difference, 99) < 20, (i, difference.mean())
        assert np.abs(from_crop(target, lm.crop_box(tuple(entry["image_size"]), box_from_points(points))) - points).max() < 0.01


def test_mean_shape_is_the_average_plain_target(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "out", size=128, progress=False)
    dataset = LandmarkDataset(Store.open(tmp_path / "out" / "train"), input_size=64, crop_rule=CropRule(clip=False))
    mean = dataset.mean_shape()
    assert mean.shape == (68, 2) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, np.mean([dataset.sample(i)[1] for i in range(len(dataset))], axis=0), atol=1e-6)


def test_occluding_patches_are_of_a_random_colour_as_the_training_guide_says():
    """The occlusion augmentation paints one patch of a random colour (not grey), and the training guide
    (which describes the recipe; the README links to it) says so."""
    from pathlib import Path

    from facemark.data.dataset import _photometric

    colours = []
    for seed in range(8):
        image = np.full((64, 64, 3), 128, np.uint8)
        out = _photometric(np.random.default_rng(seed), image, Augment(occlusion=1.0, colour=0.0, blur=0.0))
        patch = out[(out != 128).any(axis=2)]
        assert len(patch) and (patch == patch[0]).all()  # one patch, one colour
        colours.append(tuple(patch[0]))
    assert sum(len(set(c)) > 1 for c in colours) >= 6  # coloured, not grey
    guide = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert "occluding patch of a random colour" in guide and "grey occluding" not in guide

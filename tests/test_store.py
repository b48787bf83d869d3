import json

import numpy as np
import pytest
import torch

from facemark.cli import main
from facemark.data.dataset import Augment, LandmarkDataset
from facemark.data.prepare import is_validation, prepare, split_samples
from facemark.data.record import DataError, FaceSample
from facemark.data.store import Store, write_store
from facemark.geometry import from_crop


def test_prepare_split_and_store(synthetic_dataset, tmp_path):
    summary = prepare(synthetic_dataset, tmp_path / "out", size=96, progress=False)
    assert summary["faces"] == 40 and summary["skipped"] == []
    manifest = json.loads((tmp_path / "out" / "split.json").read_text())
    assert len(manifest["train"]) == summary["train"] and len(manifest["val"]) == summary["val"]
    assert not set(manifest["train"]) & set(manifest["val"])
    store = Store.open(tmp_path / "out" / "train")
    assert store.images.shape[1:] == (96, 96, 3) and store.points.shape[1:] == (68, 2)
    assert len(store) == summary["train"]


def test_split_is_stable_and_groups_faces_of_one_photo():
    samples = [FaceSample(f"x/{i}_{k}.jpg", np.zeros((68, 2)), sample_id=f"afw/{i}_{k}") for i in range(500) for k in (1, 2)]
    train, val = split_samples(samples)
    assert 0.15 < len(val) / len(samples) < 0.25
    assert {s.sample_id for s in val} == {s.sample_id for s in split_samples(samples[::-1])[1]}
    assert is_validation("afw/7_1") == is_validation("afw/7_2")


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
    # a pure flip keeps the right eye on the image's left side
    flip_only = LandmarkDataset(store, 64, augment=Augment(0.0, (1.0, 1.0), 0.0, 0.0, True, 0.0, 0.0, 0.0))
    for i in range(4):
        _, target, _ = flip_only[i]
        assert target[36, 0] < target[45, 0]


def test_bad_sample_is_reported_or_raises(synthetic_dataset, tmp_path):
    broken = next(synthetic_dataset.rglob("*.png"))
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match=broken.name):
        prepare(synthetic_dataset, tmp_path / "strict", progress=False)
    assert not (tmp_path / "strict" / "train").exists() or not (tmp_path / "strict" / "val").exists()
    summary = prepare(synthetic_dataset, tmp_path / "lenient", skip_bad=True, progress=False)
    assert summary["faces"] == 39 and len(summary["skipped"]) == 1
    assert broken.name in (tmp_path / "lenient" / "skipped.txt").read_text()


def test_interrupted_write_leaves_no_store(tmp_path, monkeypatch):
    samples = [FaceSample(str(tmp_path / "missing.png"), np.ones((68, 2)))]
    with pytest.raises(DataError):
        write_store(samples, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store")]


def test_damaged_store_is_refused(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "out", size=64, progress=False)
    images = tmp_path / "out" / "train" / "images.npy"
    data = bytearray(images.read_bytes())
    data[-10] ^= 0xFF
    images.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        Store.open(tmp_path / "out" / "train")


def test_cli_prepare_and_preview(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["data", "prepare", str(synthetic_dataset), "--out", str(out), "--size", "96"]) == 0
    assert "40 faces prepared" in capsys.readouterr().out
    assert main(["data", "preview", str(out / "train"), "--out", str(tmp_path / "grid.png"), "--count", "4"]) == 0
    import cv2

    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid is not None and grid.shape[0] >= 256


def test_real_300w_lite_prepares_completely(lite_root, tmp_path):
    from facemark.data.formats import read_dataset

    samples, skipped = read_dataset(lite_root, skip_bad=True)
    assert len(samples) == 2012 and skipped == []
    train, val = split_samples(samples)
    assert len(train) + len(val) == 2012 and 380 < len(val) < 430


def test_prepare_train_on_all_keeps_the_validation_store(synthetic_dataset, tmp_path):
    split = prepare(synthetic_dataset, tmp_path / "split", size=64, progress=False)
    everything = prepare(synthetic_dataset, tmp_path / "all", size=64, progress=False, train_on_all=True)
    assert everything["train"] == split["train"] + split["val"] and everything["val"] == split["val"]
    manifest = json.loads((tmp_path / "all" / "split.json").read_text())
    assert set(manifest["val"]) <= set(manifest["train"]) and "train-on-all" in manifest["rule"]
    ids = [[e["id"] for e in Store.open(tmp_path / name / "val").samples] for name in ("all", "split")]
    assert ids[0] == ids[1]

import json

import numpy as np
import pytest

from facemark.cli import main
from facemark.data.prepare import is_validation, prepare, split_samples
from facemark.data.record import DataError, FaceSample
from facemark.data.store import Store, write_store


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


def test_a_truncated_jpeg_is_refused_or_skipped(synthetic_dataset, tmp_path):
    """cv2.imread decodes a JPEG that stops early to a partly grey image; the one image loader refuses it."""
    import cv2

    victim = next(synthetic_dataset.rglob("*.png"))
    jpeg = cv2.imencode(".jpg", cv2.imread(str(victim)))[1].tobytes()
    victim.unlink()
    truncated = victim.with_suffix(".jpg")
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(DataError, match=f"{truncated.name}: not a readable image \\(truncated JPEG"):
        prepare(synthetic_dataset, tmp_path / "strict", progress=False)
    summary = prepare(synthetic_dataset, tmp_path / "lenient", skip_bad=True, progress=False)
    assert summary["faces"] == 39 and [p for p, _ in summary["skipped"]] == [str(truncated)]
    assert "truncated" in (tmp_path / "lenient" / "skipped.txt").read_text()


def test_a_coordinate_beyond_float32_stops_prepare_naming_file_and_line(synthetic_dataset, tmp_path):
    """1e39 used to pass (finite in float64), be stored as inf, and turn validation NME into NaN."""
    pts = next(synthetic_dataset.rglob("*.pts"))
    lines = pts.read_text().splitlines()
    lines[5] = "1e39 20.0"
    pts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="float32") as err:
        prepare(synthetic_dataset, tmp_path / "out", progress=False)
    assert str(err.value).startswith(f"{pts}:6:")


def test_the_store_refuses_points_that_would_poison_training(tmp_path):
    """Whatever a reader let through, the store checks every sample against its decoded image."""
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.full((80, 80, 3), 100, np.uint8))
    good = np.random.default_rng(0).uniform(20, 60, (68, 2))
    for points, words in ((np.where(np.arange(68)[:, None] == 3, np.inf, good), "float32"),
                          (good + [0, 1000], "outside the 80x80 image")):
        samples = [FaceSample(str(tmp_path / "a.png"), good), FaceSample(str(tmp_path / "a.png"), points)]
        with pytest.raises(DataError, match=words):
            write_store(samples, tmp_path / "store", size=32, progress=False)
        _, skipped = write_store(samples, tmp_path / "store", size=32, skip_bad=True, progress=False)
        assert len(skipped) == 1 and len(Store.open(tmp_path / "store")) == 1


def test_a_store_left_by_a_killed_prepare_is_removed(synthetic_dataset, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "out" / f".train.tmp-{int(dead.stdout)}"
    stale.mkdir(parents=True)
    (stale / "images.npy").write_bytes(bytes(1000))
    prepare(synthetic_dataset, tmp_path / "out", size=64, progress=False)
    assert not stale.exists() and Store.open(tmp_path / "out" / "train")


def test_a_store_index_scheme_is_never_read_as_a_path(synthetic_dataset, tmp_path):
    """A string in a file is not a file to open: a store's scheme is a built-in name or the full mapping."""
    from facemark.schemes import SCHEME_DIR, SchemeError

    prepare(synthetic_dataset, tmp_path / "data", size=48, progress=False)
    index_path = tmp_path / "data" / "train" / "index.json"
    index = json.loads(index_path.read_text())
    index["scheme"] = str(SCHEME_DIR / "ibug68.yaml")  # a real scheme file: it used to be opened
    index_path.write_text(json.dumps(index))
    with pytest.raises(SchemeError, match=r"index.json: scheme = '.*ibug68.yaml': expected a built-in scheme name"):
        _ = Store.open(tmp_path / "data" / "train").scheme

"""tools/pack_store.py: a store packed as JPEG and unpacked is a valid store with the same faces."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from facemark.data.prepare import prepare
from facemark.data.store import Store

TOOL = Path(__file__).resolve().parents[1] / "tools" / "pack_store.py"


def test_pack_unpack_round_trip(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "data", size=96, progress=False)
    source = tmp_path / "data" / "train"
    for action, src, dst in (("pack", source, tmp_path / "packed"), ("unpack", tmp_path / "packed", tmp_path / "back")):
        result = subprocess.run([sys.executable, str(TOOL), action, str(src), str(dst)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    before, after = Store.open(source), Store.open(tmp_path / "back")  # the checksum is verified
    assert (tmp_path / "packed" / "images.jpg.bin").stat().st_size < (source / "images.npy").stat().st_size / 2
    assert np.array_equal(before.points, after.points) and before.samples == after.samples
    diff = np.abs(before.images.astype(int) - after.images.astype(int))
    assert 0 < diff.mean() < 3  # lossy, but barely
    assert after.index["packed"] == "jpeg-95" and after.index["checksum"] != before.index["checksum"]


def test_unpack_refuses_a_damaged_pack(synthetic_dataset, tmp_path):
    prepare(synthetic_dataset, tmp_path / "data", size=96, progress=False)
    subprocess.run([sys.executable, str(TOOL), "pack", str(tmp_path / "data" / "val"), str(tmp_path / "p")], check=True)
    blob = tmp_path / "p" / "images.jpg.bin"
    blob.write_bytes(b"\0" * blob.stat().st_size)
    result = subprocess.run([sys.executable, str(TOOL), "unpack", str(tmp_path / "p"), str(tmp_path / "back")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "does not decode" in result.stderr
    assert not (tmp_path / "back").exists() and not (tmp_path / ".back.unpack").exists()

"""Carry a packed store to another machine in a quarter of its size, and unpack it there.

    python -m tools.pack_store pack data/300w-lite/train .gpu/300w-train   # JPEG (quality 95) regions
    python -m tools.pack_store unpack .gpu/300w-train data/300w-lite/train  # a normal store again

Used to train on a GPU machine whose upload limit is smaller than the raw ``images.npy`` (the
300w-lite split is 214 MB raw, 30 MB packed). Lossy: the unpacked images are the JPEG-decoded
regions (mean absolute pixel change 1.5 levels at quality 95); points and index are exact, and the
unpacked index records ``"packed": "jpeg-95"`` and a fresh checksum.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from facemark.data.store import Store, _checksum

QUALITY = 95


def pack(store_dir: Path, out: Path) -> None:
    store = Store.open(store_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])[1].tobytes()
              for image in store.images]
    (out / "images.jpg.bin").write_bytes(b"".join(chunks))
    np.save(out / "offsets.npy", np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64))
    shutil.copy(store_dir / "points.npy", out / "points.npy")
    shutil.copy(store_dir / "index.json", out / "index.json")
    print(f"{store_dir}: {len(chunks)} faces -> {out} ({sum(map(len, chunks)) / 1e6:.1f} MB)")


def unpack(packed: Path, store_dir: Path) -> None:
    index = json.loads((packed / "index.json").read_text())
    data, offsets = (packed / "images.jpg.bin").read_bytes(), np.load(packed / "offsets.npy")
    size = int(index["size"])
    tmp = store_dir.with_name(f".{store_dir.name}.unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (len(offsets) - 1, size, size, 3))
    for i in range(len(offsets) - 1):
        image = cv2.imdecode(np.frombuffer(data[offsets[i]:offsets[i + 1]], np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.shape != (size, size, 3):
            del images
            shutil.rmtree(tmp)
            sys.exit(f"{packed / 'images.jpg.bin'}: face {i} does not decode to {size}x{size}x3")
        images[i] = image
    images.flush()
    del images
    shutil.copy(packed / "points.npy", tmp / "points.npy")
    index.update(packed=f"jpeg-{QUALITY}", checksum=_checksum(tmp / "images.npy", tmp / "points.npy"))
    (tmp / "index.json").write_text(json.dumps(index))
    shutil.rmtree(store_dir, ignore_errors=True)
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(store_dir)
    Store.open(store_dir)  # loads and verifies


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    (pack if args.action == "pack" else unpack)(args.source, args.dest)


if __name__ == "__main__":
    main()

"""Read throughput of the packed store: samples/s for shuffled batches of 64.

    python -m bench.bench_store data/300w-lite/train

Two figures: raw store reads (memmap fancy-indexing, what the "record store" itself delivers) and
the full training item (crop warp to 128x128 + augmentation + tensor conversion), one process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facemark.data.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", nargs="?", default="data/300w-lite/train")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    from facemark.data.dataset import (  # the train extra (torch), imported when used: --help stays quick
        Augment,
        LandmarkDataset,
    )

    store = Store.open(args.store)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(store)) for _ in range(args.batch * args.batches // len(store) + 1)])
    start = time.perf_counter()
    for b in range(args.batches):
        index = np.sort(order[b * args.batch : (b + 1) * args.batch])
        images, points = store.images[index], store.points[index]
        images.sum() + points.sum()  # touch the data so the read really happens
    raw = args.batch * args.batches / (time.perf_counter() - start)
    rows = [("store read (uint8 region + points)", raw)]
    for name, augment in (("training item, no augmentation", None), ("training item, augmented", Augment())):
        dataset = LandmarkDataset(store, 128, augment=augment)
        count = min(args.batches, 20) * args.batch
        start = time.perf_counter()
        for i in order[:count]:
            dataset[int(i)]
        rows.append((name, count / (time.perf_counter() - start)))
    print(f"| {args.store}, shuffled batches of {args.batch} | samples/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()

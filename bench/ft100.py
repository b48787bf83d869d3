"""Fine-tuning vs from scratch on 100 faces (issue 15): builds data/ft100 and two configs.

data/ft100/train: 100 faces drawn (seed 0) from data/300w-lite/train; data/ft100/val: a copy of
data/300w-lite/val (391 faces). Run ``python -m bench.ft100`` then the two printed commands.

    python -m bench.ft100 [--count 100] [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from facemark.data.store import Store, _checksum, convert_stores
from facemark.files import write_atomic
from facemark.schemes import load_yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE, OUT = REPO / "data/300w-lite", REPO / "data/ft100"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100, help="training faces drawn from data/300w-lite/train")
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args(argv)
    count, steps = args.count, args.steps
    if not (OUT / "train" / "index.json").is_file():
        store = Store.open(SOURCE / "train")
        pick = np.sort(np.random.default_rng(0).choice(len(store), count, replace=False))
        tmp = OUT / ".train.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "images.npy", np.ascontiguousarray(store.images[pick]))
        np.save(tmp / "points.npy", np.asarray(store.points)[pick])
        index = {**store.index, "num_samples": count, "samples": [store.samples[i] for i in pick],
                 "sources": [str(store.path)], "checksum": _checksum(tmp / "images.npy", tmp / "points.npy")}
        write_atomic(tmp / "index.json", json.dumps(index))
        tmp.rename(OUT / "train")
    if not (OUT / "val" / "index.json").is_file():
        convert_stores([SOURCE / "val"], OUT / "val", progress=False)
    base = load_yaml(REPO / "configs/300w_pipnet_resnet_128_long.yaml")
    for name, extra in (("scratch", {}), ("init", {"init": str(REPO / "runs/pipnet_resnet_128_long/best.pt")})):
        config = {**base, "data": "data/ft100", "out": f"runs/ft_{name}", "steps": steps, "warmup_steps": 30,
                  "val_every": steps, "ckpt_every": steps, "num_threads": 1, "batch_size": 16, **extra}
        path = OUT / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        print(f"facemark train --config {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()

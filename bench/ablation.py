"""The Step-7 ablation: each change to the default model and its validation NME.

Every row is one model file scored on the fixed 300w-lite validation split with the ground-truth
landmark box (inter-ocular NME, outer eye corners), with or without flip-test averaging, by
:func:`facemark.evaluate.evaluate`. A row whose model file is missing is listed as skipped.

    python -m bench.ablation [--data data/300w-lite] [--out bench/results/ablation.md]

The models: the Step-5 default (``runs/old_default.onnx``: ``git show e00778a:facemark/assets/
models/default.onnx``), the Step-7a 12k-step twin (``configs/300w_pipnet_resnet_128_long.yaml``),
the Step-7b candidates (``configs/300w_pipnet_resnet_160.yaml``, ``configs/300w_pipnet_resnet075_128.yaml``,
``configs/300w_pipnet_resnet075_128_lightaug.yaml``), the Step-7c GPU runs
(``configs/300w_pipnet_resnet075_128_lightaug_gpu.yaml``, ``configs/300w_pipnet_resnet075_128_gpu.yaml``,
``configs/300w_pipnet_resnet075_128_gpu_long.yaml``),
each exported from its ``last.pt`` to ``twin.onnx`` beside it, and the shipped default (trained on all
faces, validation ones included: its row is not a held-out score).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench import write_report
from facemark.api import Landmarker
from facemark.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]

#: (change, model file, flip test, note)
ROWS = [
    ("Step-5 default: 3,600 steps of 32, one thread", "runs/old_default.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/old_default.onnx", True, ""),
    ("12,000-step cosine schedule, channels-last (split-trained twin)", "runs/pipnet_resnet_128_long/twin.onnx",
     False, ""),
    ("+ flip-test averaging at inference", "runs/pipnet_resnet_128_long/twin.onnx", True, "the Step-7a pipeline"),
    ("160 px input (10 x 10 map), 8,000 steps", "runs/pipnet_resnet_160/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/pipnet_resnet_160/twin.onnx", True, ""),
    ("ResNet-0.75 (1.9 M parameters), 128 px, 8,000 steps", "runs/pipnet_resnet075_128/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/pipnet_resnet075_128/twin.onnx", True, ""),
    ("ResNet-0.75 with light augmentation (rotation 10 deg, no blur, no occlusion)",
     "runs/pipnet_resnet075_128_lightaug/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/pipnet_resnet075_128_lightaug/twin.onnx", True,
     "the Step-7b pipeline"),
    ("light augmentation, 16,000 steps (GPU)", "runs/300w_pipnet_resnet075_128_lightaug_gpu/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/300w_pipnet_resnet075_128_lightaug_gpu/twin.onnx", True, ""),
    ("heavy augmentation (rotation 30 deg, blur, occlusion), 16,000 steps (GPU)",
     "runs/300w_pipnet_resnet075_128_gpu/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/300w_pipnet_resnet075_128_gpu/twin.onnx", True, ""),
    ("heavy augmentation, 19,500 steps (GPU)", "runs/300w_pipnet_resnet075_128_gpu_long/twin.onnx", False, ""),
    ("+ flip-test averaging at inference", "runs/300w_pipnet_resnet075_128_gpu_long/twin.onnx", True,
     "the shipped pipeline"),
    ("+ all 2012 faces, validation ones included (the shipped default)", "facemark/assets/models/default.onnx",
     True, "not held out: these faces were trained on"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablation.md")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.ablation", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Ablation of the default model (Step 7)", "", f"`{command}`", "",
             "Validation split of 300w-lite (391 faces), ground-truth landmark box, NME normalised by the "
             "inter-ocular distance (outer eye corners 36, 45).", "",
             "| change | model file | flip test | NME io % | 95 % CI | FR@10 % | AUC@8 | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for change, model, flip, note in ROWS:
        path = ROOT / model
        if not path.is_file():
            lines.append(f"| {change} | `{model}` | {'on' if flip else 'off'} | skipped: file missing | | | | {note} |")
            continue
        result = evaluate(Landmarker(path, flip_test=flip, num_threads=1), args.data / "val", progress=False)
        s = result["summary"]
        lo, hi = s["ci95"]
        lines.append(f"| {change} | `{model}` | {'on' if flip else 'off'} | {s['mean'] * 100:.2f} | "
                     f"{lo * 100:.2f}-{hi * 100:.2f} | {s['fr@10'] * 100:.1f} | {s['auc@8']:.3f} | {note} |")
        print(lines[-1], file=sys.stderr)
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

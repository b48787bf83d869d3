"""Benchmark every registered model on CPU: parameters, MACs, batch-1 latency in torch and ONNX Runtime.

    python -m bench.bench_models [--models seed_senet pipnet_mbv2] [--threads 2] [--iters 30] [--rounds 3]
    python -m bench.bench_models --candidates [--threads 2]

``--candidates``: the shipped default's architecture (``pipnet_resnet``, width 0.75, 128 px) and
the cheaper variants Step 18 weighed for a one-pass student (:data:`CANDIDATES`: smaller inputs,
narrower, one block per stage), written to ``bench/results/candidates.md``.

Each model is built for 68 points at input 128 (PIPNet models also at 256, where the default net
stride is 32, as in the PIPNet paper), its BatchNorm statistics are set from one random batch (so
the timed activations are realistic, not near-denormal), and it is exported with the TorchScript
ONNX exporter (``dynamo=False``: the dynamo exporter needs onnxscript). Latency is the median of
``--iters`` runs after warm-up, the best of ``--rounds`` such medians (torch and ORT alternate;
the machine may be shared). MACs count conv and linear multiply-accumulates only (FLOPs are
about twice that); BN, pooling and element-wise ops are left out. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench import write_report
from bench.timing import median_ms
from facemark.export import PointsOnly
from facemark.models import create_model, list_models


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the conv and linear layers for one forward pass of ``x``."""
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inputs, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total // x.shape[0]


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


ROOT = Path(__file__).resolve().parents[1]
#: label -> (model_args of pipnet_resnet, input size): the default and cheaper one-pass candidates
CANDIDATES = {
    "the default: width 0.75, 128 px": ({"width": 0.75}, 128),
    "112 px (stride 16, 7 x 7 map)": ({"width": 0.75, "stride": 16}, 112),
    "96 px (stride 16, 6 x 6 map)": ({"width": 0.75, "stride": 16}, 96),
    "width 0.625, 128 px": ({"width": 0.625}, 128),
    "width 0.5, 128 px": ({"width": 0.5}, 128),
    "one block per stage (layers [1, 1, 1, 1]), 128 px": ({"width": 0.75, "layers": [1, 1, 1, 1]}, 128),
    "stage 3 kept at two blocks (layers [1, 1, 2, 1]), 128 px": ({"width": 0.75, "layers": [1, 1, 2, 1]}, 128),
    "width 0.5, 112 px": ({"width": 0.5, "stride": 16}, 112),
}


def bench_one(name: str, size: int, threads: int, iters: int, rounds: int, workdir: Path,
              model_args: dict | None = None) -> dict:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name, 68, input_size=size, **(model_args or {}))
    if hasattr(model, "set_mean_shape"):
        model.set_mean_shape(torch.rand(68, 2))
    calibrate_bn(model, torch.rand(4, 3, size, size))
    x = torch.rand(1, 3, size, size)
    row = {
        "model": name,
        "input": size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "mmacs": count_macs(model, x) / 1e6,
        "map": f"{model.map_size}x{model.map_size}" if hasattr(model, "map_size") else "-",
    }
    path = workdir / f"{name}_{size}.onnx"
    wrapper = PointsOnly(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
            output_names=["points"], dynamic_axes={"image": {0: "batch"}, "points": {0: "batch"}},
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    # no busy-waiting ORT threads after a run: they would steal the cores from the torch timing
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy()}
    # alternate torch and ORT over a few rounds and keep each one's best median: the machine is
    # shared, and the best round is the least disturbed one
    torch_ms, ort_ms = [], []
    for _ in range(rounds):
        with torch.no_grad():
            torch_ms.append(median_ms(lambda: model.predict_points(x), iters))
        ort_ms.append(median_ms(lambda: session.run(None, feed), iters))
    row["torch_ms"], row["ort_ms"] = min(torch_ms), min(ort_ms)
    with torch.no_grad():
        row["max_diff"] = float(np.abs(session.run(None, feed)[0] - model.predict_points(x).numpy()).max())
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list_models())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help="the default's architecture and its cheaper variants")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does: tiny head weights make denormals otherwise
    if args.candidates:
        candidates(args)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for size in (128, 256) if name.startswith("pipnet") else (128,):
                rows.append(bench_one(name, size, args.threads, args.iters, args.rounds, Path(tmp)))

    runs = f"best of {args.rounds} medians of {args.iters} runs"
    print(f"\nCPU, batch 1, {args.threads} threads, 68 points, {runs}\n")
    print("| model | input | map | params (M) | MMACs | torch ms | ORT ms | ORT vs torch max diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['input']} | {r['map']} | {r['params_m']:.2f} | {r['mmacs']:.0f} "
            f"| {r['torch_ms']:.2f} | {r['ort_ms']:.2f} | {r['max_diff']:.1e} |"
        )


def candidates(args) -> None:
    """:data:`CANDIDATES` timed in one run, each as a ratio to the default's ORT time."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = {label: bench_one("pipnet_resnet", size, args.threads, args.iters, args.rounds, Path(tmp),
                                 {"num_nb": 10, **model_args})
                for label, (model_args, size) in CANDIDATES.items()}
    base = next(iter(rows.values()))["ort_ms"]
    lines = ["# One-pass candidates: the default's architecture and cheaper variants", "",
             f"`python -m bench.bench_models --candidates --threads {args.threads}`", "",
             f"`pipnet_resnet`, 68 points, batch 1, {args.threads} threads, best of {args.rounds} medians of "
             f"{args.iters} runs; ONNX Runtime is what `Landmarker` runs.", "",
             "| variant | map | params (M) | MMACs | ORT ms | × the default |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {label} | {r['map']} | {r['params_m']:.2f} | {r['mmacs']:.0f} | {r['ort_ms']:.2f} | "
              f"{r['ort_ms'] / base:.2f} |" for label, r in rows.items()]
    write_report(ROOT / "bench" / "results" / "candidates.md", lines)


if __name__ == "__main__":
    main()

"""Train several configs side by side on one (GPU) machine inside a fixed wall-clock budget.

    python -m tools.remote_train --packed .gpu --seconds 520 --out $OUT CONFIG [CONFIG ...]

1. Unpacks the stores that ``python -m tools.pack_store`` packed (``<packed>/300w-train``, ``300w-val``)
   into ``data/300w-lite/{train,val}`` and builds ``data/300w-lite-all`` (train + val) from them.
2. Probes: all configs train together for ``--probe-steps`` steps; the slowest one's steps/s sets
   the schedule length, the same for every config (rounded down to 500 steps, 10 % margin), so
   each run completes a full cosine schedule inside the budget. The configs' own ``steps`` are
   replaced; everything else in them is kept.
3. Trains them all at once (each with ``--workers`` loader processes) and writes each run's
   training state without the optimizer (``<out>/<config stem>.pt``, with its history) and the
   configs as run (``<out>/configs.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from facemark.schemes import load_yaml

REPO = Path(__file__).resolve().parents[1]


def prepare_data(packed: Path, overwrite: bool) -> None:
    from facemark.data.store import convert_stores

    if not overwrite and any(Path(p).exists() for p in ("data/300w-lite", "data/300w-lite-all")):
        sys.exit("data/300w-lite or data/300w-lite-all exists here: this tool is for a bare (remote) machine; "
                 "--overwrite-data replaces them with the unpacked (JPEG-decoded) copies")

    for part in ("train", "val"):
        subprocess.run([sys.executable, "-m", "tools.pack_store", "unpack", str(packed / f"300w-{part}"),
                        f"data/300w-lite/{part}"], check=True)
    convert_stores(["data/300w-lite/train", "data/300w-lite/val"], "data/300w-lite-all/train", progress=False)
    shutil.rmtree("data/300w-lite-all/val", ignore_errors=True)
    shutil.copytree("data/300w-lite/val", "data/300w-lite-all/val")


def schedule_steps(rate: float, seconds: float, most: int) -> int:
    """Steps that ``rate`` steps/s completes in ``seconds`` less 30 s (final validation, checkpoints,
    export) with a 10 % margin, at most ``most``; from 1,000 on, rounded down to 500."""
    steps = int(max(0.0, min(most, rate * (seconds - 30) * 0.9)))
    return steps // 500 * 500 if steps >= 1000 else steps


def launch(configs: list[dict], tag: str, max_steps: int | None, log_dir: Path) -> list[tuple[subprocess.Popen, dict]]:
    procs = []
    for config in configs:
        path = log_dir / f"{tag}-{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config["values"]))
        command = [sys.executable, "-m", "facemark.cli", "train", "--config", str(path)]
        if max_steps:
            command += ["--max-steps", str(max_steps)]
        log = open(log_dir / f"{tag}-{config['name']}.log", "w")
        procs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                           [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}), config))
    return procs


def wait(procs, deadline: float) -> None:
    for proc, config in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: the run writes a checkpoint and stops
            proc.wait(timeout=60)
        if proc.returncode:
            print(f"{config['name']}: exit {proc.returncode}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--packed", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True, help="wall-clock budget for everything")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--probe-steps", type=int, default=300)
    parser.add_argument("--max-schedule", type=int, default=60000)
    parser.add_argument("--min-schedule", type=int, default=1000)
    parser.add_argument("--overwrite-data", action="store_true", help="replace existing data/300w-lite* stores")
    args = parser.parse_args(argv)
    end = time.time() + args.seconds
    os.chdir(REPO)
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path("runs/remote_logs")
    log_dir.mkdir(parents=True, exist_ok=True)

    prepare_data(args.packed, args.overwrite_data)
    configs = []
    for path in args.configs:
        values = load_yaml(path, "config")
        values.update(workers=args.workers, num_threads=1, val_every=2000, ckpt_every=2000)
        configs.append({"name": path.stem, "values": values})

    # -- probe: every run at once, as in the real thing
    probes = [{"name": c["name"], "values": {**c["values"], "out": f"runs/probe/{c['name']}", "steps": 10 ** 6}}
              for c in configs]
    started = time.time()
    procs = launch(probes, "probe", args.probe_steps, log_dir)
    loop_start = {}
    while any(p.poll() is None for p, _ in procs) and time.time() < end:
        for _, c in procs:  # config.json is written just before the first step
            if c["name"] not in loop_start and Path(c["values"]["out"], "config.json").exists():
                loop_start[c["name"]] = time.time()
        time.sleep(0.2)
    wait(procs, end)
    finished = time.time()
    for proc, c in procs:
        if proc.returncode:
            sys.exit(f"probe of {c['name']} failed:\n" + (log_dir / f"probe-{c['name']}.log").read_text()[-3000:])
    setup = max(loop_start.values()) - started
    rate = args.probe_steps / max(finished - min(loop_start.values()), 1e-3)
    steps = schedule_steps(rate, end - time.time() - setup, args.max_schedule)
    print(f"probe: setup {setup:.0f} s, {rate:.1f} steps/s per run with {len(configs)} runs -> {steps} steps each",
          flush=True)
    if steps < args.min_schedule:
        sys.exit("too little time left for a useful schedule")

    # -- the runs
    for c in configs:
        c["values"].update(steps=steps, time_limit_min=round((end - time.time() - 25) / 60, 2))
    procs = launch(configs, "run", None, log_dir)
    wait(procs, end - 20)

    import torch

    from facemark.checkpoint import load_checkpoint  # torch: a run's own machine has it

    for c in configs:
        last = Path(c["values"]["out"]) / "last.pt"
        if not last.exists():
            print(f"{c['name']}: no checkpoint", flush=True)
            continue
        state = load_checkpoint(last)  # weights only, fields checked
        for key in ("optimizer", "scheduler"):
            state.pop(key, None)
        torch.save(state, args.out / f"{c['name']}.pt")
        vals = [h["val_nme"] for h in state["history"] if "val_nme" in h]
        print(f"{c['name']}: step {state['step']}, last validation NME {100 * vals[-1]:.3f} %", flush=True)
    (args.out / "configs.json").write_text(json.dumps({c["name"]: c["values"] for c in configs}, indent=1))
    for log in sorted(log_dir.glob("run-*.log")):
        print(f"--- {log.name}\n" + "\n".join(log.read_text().replace("\r", "\n").splitlines()[-6:]), flush=True)


if __name__ == "__main__":
    main()

"""Bulk landmarking throughput: ``facemark bulk`` on the local and the ray engine against a plain
``Landmarker.detect`` loop, and whether the two engines write the same points.

    python -m bench.bench_bulk --images 500 [--workers 1,2] [--batch-sizes 1,8,32] [--repeats 1]

Photos: ``--images`` 300w-lite photos (validation-sized, about 400 x 400 px), spread evenly over
afw, helen and lfpw. Every run is a fresh process timed from outside, wall time including Python's
start, imports, model loading and (ray) starting and stopping a local Ray instance, each writing to
an empty folder:

* ``plain loop``: ``for path in photos: Landmarker().detect(path)`` (ONNX Runtime's default threads);
* ``local``: ``python -m facemark.cli bulk PHOTOS --out DIR --workers W --batch-size B``;
* ``ray``: the same with ``--engine ray`` (a local Ray instance with every CPU of the machine).

Then the rows of every ray run are matched to the local run's by ``(path, face)``: the same rows,
and the largest point difference in pixels (target <= 0.01). Writes ``bench/results/bulk.md``.

Start-up: each engine (and the plain loop) also runs on ``--startup-images`` (4) photos; that wall
time is its fixed cost, and ``(N - 4) / (T_N - T_4)`` its rate once started, the figure that
decides a run over millions of photos.

Memory: with ``--memory N`` (e.g. 5000) the local engine also runs over N photos (the 300w-lite
photos again and again, through links of distinct names, so each is a new image to it) while its
resident memory (``VmRSS``) is sampled every half second; the report gives it at each tenth of the
run. Streaming keeps it flat; a list of results held in memory would grow with N.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facemark.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
LITE = Path(os.environ.get("FACEMARK_SHARED", ROOT.parent / "shared")) / "data" / "300w-lite"
RESULTS = ROOT / "bench" / "results" / "bulk.md"
FOLDERS = ("afw", "helen/trainset", "lfpw/trainset")

PLAIN_LOOP = """
import sys, time
from facemark.api import Landmarker
lm = Landmarker()
faces = 0
for path in open(sys.argv[1]).read().split(chr(10)):
    faces += len(lm.detect(path))
print("faces", faces)
"""


def photos(count: int) -> list[str]:
    found = sorted(str(p) for folder in FOLDERS for p in (LITE / folder).glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos under {LITE}")
    step = max(1, len(found) // count)
    return found[::step][:count]


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def compare(local: Path, other: Path) -> tuple[bool, float]:
    """``(same (path, face) rows and errors, largest point difference in px)`` of two output folders."""
    import numpy as np
    import pyarrow.parquet as pq

    def rows(folder: Path) -> dict:
        table = pq.read_table(folder, columns=["path", "face", "points", "error"])
        return {(p, f): (pts, e) for p, f, pts, e in zip(*(table.column(c).to_pylist() for c in table.column_names))}

    a, b = rows(local), rows(other)
    if a.keys() != b.keys() or any(a[k][1] != b[k][1] for k in a):
        return False, float("nan")
    worst = 0.0
    for key, (points, _) in a.items():
        if points is not None:
            worst = max(worst, float(np.abs(np.asarray(points) - np.asarray(b[key][0])).max()))
    return True, worst


def rss_over_run(count: int, tmp: Path, env: dict) -> tuple[list[float], float]:
    """The local engine over ``count`` photos (links of distinct names to the 300w-lite photos): its
    resident memory in MB, sampled every half second, and the run's wall time."""
    links = tmp / "memory-photos"
    links.mkdir()
    source = photos(10_000)
    for k in range(count):
        (links / f"{k:06d}.jpg").symlink_to(source[k % len(source)])
    command = [sys.executable, "-m", "facemark.cli", "bulk", str(links), "--out", str(tmp / "memory-out")]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            samples.append(int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024)
        except (OSError, StopIteration):
            pass
        time.sleep(0.5)
    if process.returncode != 0 or not samples:
        raise SystemExit(f"the memory run failed ({process.returncode})")
    return samples, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="photos per run")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values, both engines")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated --batch-size values, both engines")
    parser.add_argument("--engines", default="local,ray", help="engines to run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest counts")
    parser.add_argument("--startup-images", type=int, default=4, help="photos of the start-up runs (0: none)")
    parser.add_argument("--memory", type=int, default=0, help="also sample the local engine's RSS over this many "
                        "photos (0: not)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    workers = [int(v) for v in args.workers.split(",")]
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    engines = args.engines.split(",")
    command_line = "python -m bench.bench_bulk " + " ".join(argv if argv is not None else sys.argv[1:])
    paths = photos(args.images)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    load_before = os.getloadavg()
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_bulk_") as tmp:
        tmp = Path(tmp)
        listing = tmp / "photos.txt"
        listing.write_text("\n".join(paths))
        startup = {}
        if args.startup_images:
            few = tmp / "few.txt"
            few.write_text("\n".join(paths[: args.startup_images]))
            startup["plain"] = min(timed([sys.executable, "-c", PLAIN_LOOP, str(few)], env)
                                   for _ in range(args.repeats))
            for engine in engines:
                startup[engine] = min(timed([sys.executable, "-m", "facemark.cli", "bulk",
                                             *paths[: args.startup_images], "--out", str(tmp / f"few-{engine}-{r}"),
                                             "--engine", engine], env) for r in range(args.repeats))
            print("start-up (" + ", ".join(f"{k} {v:.1f} s" for k, v in startup.items()) + ")", flush=True)
        seconds = min(timed([sys.executable, "-c", PLAIN_LOOP, str(listing)], env) for _ in range(args.repeats))
        rows.append(("plain `Landmarker.detect` loop", "-", "-", seconds))
        print(f"plain loop: {len(paths) / seconds:.1f} images/s ({seconds:.1f} s)", flush=True)
        for engine in engines:
            for w in workers:
                for b in batch_sizes:
                    best = None
                    for r in range(args.repeats):
                        out = tmp / f"{engine}-w{w}-b{b}-{r}"
                        command = [sys.executable, "-m", "facemark.cli", "bulk", *paths, "--out", str(out),
                                   "--engine", engine, "--workers", str(w), "--batch-size", str(b)]
                        seconds = timed(command, env)
                        best = seconds if best is None else min(best, seconds)
                        outputs[(engine, w, b)] = out
                    rows.append((engine, w, b, best))
                    print(f"{engine} workers {w} batch {b}: {len(paths) / best:.1f} images/s ({best:.1f} s)",
                          flush=True)
        local = [key for key in outputs if key[0] == "local"]
        checks = []
        if local:
            reference = outputs[local[0]]
            for key, out in outputs.items():
                if key != local[0]:
                    same, worst = compare(reference, out)
                    checks.append((key, same, worst))
        import pyarrow.parquet as pq

        table = pq.read_table(next(iter(outputs.values()))) if outputs else None
        memory = rss_over_run(args.memory, tmp, env) if args.memory else None
    load_after = os.getloadavg()

    plain = len(paths) / rows[0][3]
    best_local = max((len(paths) / s for e, _, _, s in rows if e == "local"), default=None)
    best_ray = max((len(paths) / s for e, _, _, s in rows if e == "ray"), default=None)
    lines = [
        "# Bulk landmarking: local and ray engines",
        "",
        (f"`{command_line}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
         f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and {load_after[0]:.1f} after."),
        "",
        f"{len(paths)} 300w-lite photos (about 400 x 400 px) from {', '.join(FOLDERS)}; "
        + (f"{table.column('face').length() - table.column('face').null_count} faces, "
           f"{sum(e is not None for e in table.column('error').to_pylist())} errors. " if table is not None else "")
        + "Each run is a fresh process timed from outside: wall time including start-up (imports, model, "
          "Ray's start and shutdown), writing Parquet to an empty folder.",
        "",
        "| run | workers | batch size | seconds | images/s | vs plain loop | images/s once started |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, w, b, seconds in rows:
        rate = len(paths) / seconds
        fixed = startup.get("plain" if w == "-" else engine)
        started = (f"{(len(paths) - args.startup_images) / (seconds - fixed):.1f}"
                   if fixed is not None and seconds > fixed else "-")
        lines.append(f"| {engine} | {w} | {b} | {seconds:.1f} | {rate:.1f} | {rate / plain:.2f}x | {started} |")
    lines.append("")
    if startup:
        lines.append(f"Start-up, the wall time on {args.startup_images} photos (default workers, batch 8): "
                     + ", ".join(f"{'plain loop' if k == 'plain' else k} {v:.1f} s" for k, v in startup.items())
                     + f". *Once started* = ({len(paths)} - {args.startup_images}) / (seconds - start-up).")
        lines.append("")
    if best_local and best_ray:
        lines.append(f"Best ray run / best local run: **{best_ray / best_local:.2f}x** (target >= 0.6); "
                     f"best local run / plain loop: **{best_local / plain:.2f}x** (target >= 1).")
        lines.append("")
    if checks:
        lines.append("Same rows as the first local run (`(path, face)` keys and errors; largest point difference):")
        lines.append("")
        for (engine, w, b), same, worst in checks:
            lines.append(f"- {engine}, workers {w}, batch {b}: " + (f"same rows, {worst:.4f} px" if same
                                                                    else "**different rows**"))
        lines.append("")
    if memory:
        samples, seconds = memory
        tenths = [samples[min(len(samples) - 1, round(k * (len(samples) - 1) / 10))] for k in range(11)]
        lines += [f"Memory: the local engine (default workers, batch 8) over {args.memory} photos ({seconds:.0f} s, "
                  f"{args.memory / seconds:.1f} images/s), resident memory (MB) at each tenth of the run:", "",
                  "| " + " | ".join(f"{k * 10} %" for k in range(11)) + " |", "|" + "---:|" * 11,
                  "| " + " | ".join(f"{v:.0f}" for v in tenths) + " |", "",
                  f"Peak {max(samples):.0f} MB; from 20 % to the end it moved by {tenths[10] - tenths[2]:+.0f} MB.", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

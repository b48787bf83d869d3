"""Bulk landmarking throughput: ``facemark bulk`` on the local and the ray engine against a plain
``Landmarker.detect`` loop, and whether the two engines write the same points.

    python -m bench.bench_bulk --images 500 [--workers 1,2] [--batch-sizes 1,8,32] [--repeats 1]

Photos: ``--images`` 300w-lite photos (validation-sized, about 400 x 400 px), spread evenly over
afw, helen and lfpw. Every run is a fresh process writing to an empty folder, and each reports
three figures, separately:

* **wall**: the process's wall time, timed from outside (Python's start, imports, model loading,
  for ray starting and stopping a local Ray instance, all the photos, writing Parquet);
* **start-up**: from the process's start until the first rows came back (imports, model, Ray and
  its actors, the first batch or block);
* **once started**: images/s after start-up (``bulk()``'s ``steady_images_per_s``: the slope of a
  line fit to the times the rows came back, so blocks that finish together on parallel actors do
  not inflate it; the plain loop: the photos after the first over the time they took), the figure
  that decides a run over millions of photos.

Runs: ``plain loop`` (``for path in photos: Landmarker().detect(path)``, ONNX Runtime's default
threads), ``local`` and ``ray`` (``facemark.bulk.bulk(photos, out, engine=..., workers=W,
batch_size=B)``, what ``facemark bulk`` calls; ray: a local Ray instance with every CPU).

Then the rows of every run are matched to the first local run's by ``(path, face)``: the same
rows, and the largest point difference in pixels (target <= 0.01). Writes ``bench/results/bulk.md``.

Memory: with ``--memory N`` (e.g. 5000) the local engine also runs over N photos (the 300w-lite
photos again and again, through links of distinct names, so each is a new image to it) while its
resident memory (``VmRSS``) is sampled every half second; the report gives it at each tenth of the
run. Streaming keeps it flat; a list of results held in memory would grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, write_report

ROOT = Path(__file__).resolve().parents[1]
LITE = Path(os.environ.get("FACEMARK_SHARED", ROOT.parent / "shared")) / "data" / "300w-lite"
RESULTS = ROOT / "bench" / "results" / "bulk.md"
FOLDERS = ("afw", "helen/trainset", "lfpw/trainset")

# each run prints one JSON line: its start-up (from the process's launch, BENCH_T0, to the first
# rows), the rate once started, and the images and faces done
PLAIN_LOOP = """
import json, os, sys, time
from facemark.api import Landmarker
lm = Landmarker()
paths = open(sys.argv[1]).read().split(chr(10))
faces = len(lm.detect(paths[0]))
first = time.time()
for path in paths[1:]:
    faces += len(lm.detect(path))
last = time.time()
print(json.dumps({"startup_s": first - float(os.environ["BENCH_T0"]), "faces": faces, "images": len(paths),
                  "steady": (len(paths) - 1) / (last - first) if last > first else None}))
"""

BULK_RUN = """
import json, os, sys, time
from facemark.bulk import bulk
engine, workers, batch_size, out, listing = sys.argv[1:6]
called = time.time()
s = bulk(open(listing).read().split(chr(10)), out, engine=engine, workers=int(workers), batch_size=int(batch_size),
         progress=False)
print(json.dumps({"startup_s": called - float(os.environ["BENCH_T0"]) + s["startup_s"], "faces": s["faces"],
                  "images": s["images"], "steady": s["steady_images_per_s"]}))
"""


def photos(count: int) -> list[str]:
    found = sorted(str(p) for folder in FOLDERS for p in (LITE / folder).glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos under {LITE}")
    step = max(1, len(found) // count)
    return found[::step][:count]


def timed(command: list[str], env: dict) -> dict:
    """Run ``command`` (one of the scripts above) as a fresh process: its JSON line plus ``wall``."""
    start = time.perf_counter()
    done = subprocess.run(command, env={**env, "BENCH_T0": repr(time.time())}, cwd=ROOT, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall": seconds, "stderr": done.stderr}


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
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest (wall) counts")
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
    runs, outputs, noisy = [], {}, []
    with tempfile.TemporaryDirectory(prefix="bench_bulk_") as tmp:
        tmp = Path(tmp)
        listing = tmp / "photos.txt"
        listing.write_text("\n".join(paths))
        plain = min((timed([sys.executable, "-c", PLAIN_LOOP, str(listing)], env) for _ in range(args.repeats)),
                    key=lambda r: r["wall"])
        runs.append(("plain `Landmarker.detect` loop", "-", "-", plain))
        print(f"plain loop: {plain['wall']:.1f} s wall, {plain['startup_s']:.1f} s start-up, "
              f"{plain['steady']:.1f} images/s once started", flush=True)
        for engine in engines:
            for w in workers:
                for b in batch_sizes:
                    best = None
                    for r in range(args.repeats):
                        out = tmp / f"{engine}-w{w}-b{b}-{r}"
                        run = timed([sys.executable, "-c", BULK_RUN, engine, str(w), str(b), str(out), str(listing)],
                                    env)
                        if run["stderr"].strip():
                            noisy.append((engine, w, b, run["stderr"].strip().splitlines()))
                        if best is None or run["wall"] < best["wall"]:
                            best = run
                        outputs[(engine, w, b)] = out
                    runs.append((engine, w, b, best))
                    print(f"{engine} workers {w} batch {b}: {best['wall']:.1f} s wall, {best['startup_s']:.1f} s "
                          f"start-up, {best['steady'] or float('nan'):.1f} images/s once started", flush=True)
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

    n = len(paths)
    lines = [
        "# Bulk landmarking: local and ray engines",
        "",
        (f"`{command_line}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, "
         f"load average {load_before[0]:.1f} before and {load_after[0]:.1f} after."),
        "",
        f"{n} 300w-lite photos (about 400 x 400 px) from {', '.join(FOLDERS)}; "
        + (f"{table.column('face').length() - table.column('face').null_count} faces, "
           f"{sum(e is not None for e in table.column('error').to_pylist())} errors. " if table is not None else "")
        + "Each run is a fresh process writing Parquet to an empty folder. *Wall*: the whole process, timed "
          "from outside. *Start-up*: from its launch to the first rows back (imports, model, Ray and its "
          "actors, the first batch or block). *Once started*: images/s after that (the slope of a line fit to "
          "the times the rows came back).",
        "",
        "| run | workers | batch size | wall s | images/s (wall) | start-up s | images/s once started "
        "| once started vs plain loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, w, b, run in runs:
        steady = run["steady"]
        lines.append(f"| {engine} | {w} | {b} | {run['wall']:.1f} | {n / run['wall']:.1f} | {run['startup_s']:.1f} "
                     f"| {steady:.1f} | {steady / plain['steady']:.2f}x |" if steady else
                     f"| {engine} | {w} | {b} | {run['wall']:.1f} | {n / run['wall']:.1f} | {run['startup_s']:.1f} "
                     "| - | - |")
    lines.append("")
    for w in workers:
        for b in batch_sizes:
            pair = {e: r for e, ww, bb, r in runs if (ww, bb) == (w, b)}
            if pair.get("local") and pair.get("ray") and pair["local"]["steady"] and pair["ray"]["steady"]:
                ratio = pair["ray"]["steady"] / pair["local"]["steady"]
                lines.append(f"- workers {w}, batch {b}: ray / local **{ratio:.2f}x** once started (target >= 0.9), "
                             f"{pair['local']['wall'] / pair['ray']['wall']:.2f}x over the whole run; start-up "
                             f"{pair['ray']['startup_s']:.1f} s against {pair['local']['startup_s']:.1f} s.")
    lines.append("")
    if checks:
        lines.append("Same rows as the first local run (`(path, face)` keys and errors; largest point difference):")
        lines.append("")
        for (engine, w, b), same, worst in checks:
            lines.append(f"- {engine}, workers {w}, batch {b}: " + (f"same rows, {worst:.4f} px" if same
                                                                    else "**different rows**"))
        lines.append("")
    lines.append("Lines on stderr of a successful run: " + (", ".join(f"{e} w{w} b{b}: {len(text)}"
                                                                   for e, w, b, text in noisy) or "none") + ".")
    lines.append("")
    if memory:
        samples, seconds = memory
        tenths = [samples[min(len(samples) - 1, round(k * (len(samples) - 1) / 10))] for k in range(11)]
        lines += [f"Memory: the local engine (default workers, batch 8) over {args.memory} photos ({seconds:.0f} s, "
                  f"{args.memory / seconds:.1f} images/s), resident memory (MB) at each tenth of the run:", "",
                  "| " + " | ".join(f"{k * 10} %" for k in range(11)) + " |", "|" + "---:|" * 11,
                  "| " + " | ".join(f"{v:.0f}" for v in tenths) + " |", "",
                  f"Peak {max(samples):.0f} MB; from 20 % to the end it moved by {tenths[10] - tenths[2]:+.0f} MB.", ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Install sizes: a fresh venv with the plain install, and with every extra.

Each install goes into a new virtual environment (Python's ``venv``, so pip and setuptools are in
it too, as in any fresh venv); the size is what ``du`` counts for the whole environment, and the
packages are listed with theirs. The plain install must not bring torch::

    python -m bench.bench_install [--extras train,serve,dlib]

Writes ``bench/results/install.md``. Needs PyPI (or the wheels pip finds locally).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "install.md"


def size_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def install(venv: Path, target: str) -> dict:
    """A venv at ``venv`` with ``pip install -e <target>``: its size, its largest packages, whether torch came."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    if "train" in target:  # the CPU build of torch the README names, before the rest (see the README)
        subprocess.run([str(pip), "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(pip), "install", "-q", "-e", target], check=True, cwd=ROOT)
    site = next((venv / "lib").glob("python3*/site-packages"))
    packages = sorted(((size_mb(p), p.name) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")),
                      reverse=True)
    torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    return {"mb": size_mb(venv), "top": packages[:8], "torch": torch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="train,serve,dlib", help="extras of the full install")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.bench_install", *(argv if argv is not None else sys.argv[1:])])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, target in (("`pip install facemark` (plain)", "."), (f"`pip install \"facemark[{args.extras}]\"`",
                                                                         f".[{args.extras}]")):
            result = install(Path(tmp) / label.split("`")[1].replace(" ", "_").replace('"', ""), target)
            top = ", ".join(f"{name} {mb:.0f}" for mb, name in result["top"])
            rows.append(f"| {label} | {result['mb']:.0f} | {'yes' if result['torch'] else 'no'} | {top} |")
            print(rows[-1], file=sys.stderr)
    lines = ["# Install size", "", f"`{command}`", "",
             "A fresh venv each (Python's venv: pip and setuptools included), `pip install -e` from this clone; MB as "
             "`du` counts them.", "", "| install | venv MB | torch | largest packages (MB) |", "|---|---:|---|---|",
             *rows, ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

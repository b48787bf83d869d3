"""Baselines on the fixed 300w-lite VALIDATION split; writes bench/results/baselines.md and ced_baselines.png.

Rows: the mean shape (the floor), the seed recipe model (``runs/seed_senet_128/best.pt`` when it
exists), the classical models trained on the 300w-lite training split (``runs/ert_300w/model.dat``
and ``runs/lbf_300w/model.lbf.npz`` when they exist: ``facemark train --method ert|lbf``), any
``--models name=path`` checkpoints, ONNX files or classical models, and dlib's 68-point ERT. Every
figure comes from :func:`facemark.evaluate.evaluate` on the original images, inter-ocular NME,
ground-truth landmark box (the 300-W protocol); ``--detector``, ``--jitter 0.1`` and ``--rotate 30``
add the same table with detector boxes, with ±10 % random box-edge noise and with each photo turned
by a random angle in ±30° about the face (tilted heads; the validation faces are mostly upright). Full per-run reports
(report.md, worst.png, metrics.json) go to ``--work`` (default ``runs/baselines``).

    python -m bench.compare_baselines [--data data/300w-lite] [--models pipnet=runs/pipnet_resnet_128/best.pt]
        [--detector] [--jitter 0.1] [--rotate 30] [--no-dlib]

ms/face is the median wall time of one ``predict(image, box)`` call (crop + model, batch of one,
image decoding excluded): the median over ``--timing-faces`` faces of the fastest of five calls
(robust to other jobs on a shared machine); model size is the fp32 weights (the file size for .onnx,
for dlib's .dat and for an LBF .npz).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench import machine, write_report
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.data.prepare import prepare
from facemark.data.store import read_dataset_image
from facemark.evaluate import compare, evaluate
from facemark.geometry import box_from_points

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "300w-lite"
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "300w-lite"
SEED_CHECKPOINT = ROOT / "runs" / "seed_senet_128" / "best.pt"
CLASSICAL = [("ERT 300w-lite", ROOT / "runs" / "ert_300w" / "model.dat"),  # facemark train --method ert
             ("LBF 300w-lite", ROOT / "runs" / "lbf_300w" / "model.lbf.npz")]  # facemark train --method lbf
RESULTS = ROOT / "bench" / "results"
DLIB_NOTE = ("trained by dlib on these very images (the 300-W training set: afw, helen, lfpw), so its figures "
             "are optimistic, not a held-out score; its box is mapped from the landmark box "
             "(the inverse of the dlib-hog calibration in facemark/detectors/calibration.json)")


def model_size_mb(path: Path) -> float:
    if path.suffix in (".onnx", ".dat", ".npz"):  # ONNX, dlib ERT, LBF: the file is the weights
        return path.stat().st_size / 1e6
    import torch  # the train extra (torch), imported when used: --help stays quick

    weights = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return sum(t.numel() * 4 for k, t in weights.items() if t.is_floating_point()) / 1e6


def predictors(args) -> list[tuple[str, object, str, str]]:
    """``(name, predictor, size, note)`` for every row."""
    from facemark.baselines import (  # the train extra (torch), imported when used: --help stays quick
        DlibPredictor,
        MeanShapePredictor,
        dlib_shape_model_path,
    )

    rows = [("mean shape", MeanShapePredictor.from_store(args.data / "train"), "-",
             "average training shape in the landmark box: the floor")]
    models = ([("seed recipe", SEED_CHECKPOINT)] if SEED_CHECKPOINT.is_file() else [])
    models += [(name, path) for name, path in CLASSICAL if path.is_file()]
    models += [(name, Path(path)) for name, _, path in (m.partition("=") for m in args.models)]
    for name, path in models:
        landmarker = Landmarker(path, num_threads=args.threads)
        step = landmarker.meta.get("step")
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        note = f"{landmarker.meta['model_name']}, {landmarker.input_size} px, `{shown}`"
        rows.append((name, landmarker, f"{model_size_mb(path):.1f}", note + (f", step {step}" if step else "")))
    if not args.no_dlib and importlib.util.find_spec("dlib") is not None:
        size = f"{dlib_shape_model_path().stat().st_size / 1e6:.1f}"
        rows.append(("dlib ERT", DlibPredictor(), size, DLIB_NOTE))
    return rows


def time_ms(predictor, faces, repeats: int = 5) -> float:
    """Median over ``faces`` of the fastest of ``repeats`` ``predict(image, box)`` calls, in ms.

    The fastest call of a face is the one least disturbed by other processes on a shared machine,
    so this estimates the latency of an idle machine.
    """
    jobs = [(read_dataset_image(f.image_path), box_from_points(f.points)) for f in faces]
    predictor.predict(*jobs[0])  # warm-up: lazy initialisation, first-call allocations
    best = []
    for image, box in jobs:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.predict(image, box)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    return float(np.median(best) * 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared folder with train/ and val/ stores")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="dataset to prepare when --data is missing")
    ap.add_argument("--models", nargs="*", default=[], metavar="NAME=PATH", help="more .pt/.onnx models to compare")
    ap.add_argument("--no-dlib", action="store_true")
    ap.add_argument("--detector", action="store_true", help="also evaluate with detector boxes (default detector)")
    ap.add_argument("--jitter", type=float, default=0.0, help="also evaluate with this box-edge jitter (e.g. 0.1)")
    ap.add_argument("--rotate", type=float, default=0.0,
                    help="also evaluate on faces turned by a random angle in +-this many degrees (e.g. 30)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads of our models")
    ap.add_argument("--timing-faces", type=int, default=50, help="faces in the ms/face timing pass")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "baselines", help="folder for the per-run reports")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import torch  # the train extra (torch), imported when used: --help stays quick

    torch.set_num_threads(args.threads)

    if not (args.data / "val" / "index.json").is_file():
        print(f"preparing {args.data} from {args.source}", file=sys.stderr)
        prepare(args.source, args.data)
    rows = predictors(args)
    protocols = [("gt", 0.0, 0.0, "Ground-truth landmark box (300-W protocol)", "")]
    if args.detector:
        protocols.append(("detector", 0.0, 0.0, "Detector boxes (face found and matched by IoU)", "_detector"))
    if args.jitter:
        title = f"Ground-truth landmark box, ±{args.jitter * 100:g} % edge jitter"
        protocols.append(("gt", args.jitter, 0.0, title, "_jitter"))
    if args.rotate:
        title = f"Tilted heads: each photo turned by a random angle in ±{args.rotate:g}°, ground-truth landmark box"
        protocols.append(("gt", 0.0, args.rotate, title, "_rotate"))

    val = args.data / "val"
    timing_faces = load_faces(val)[0][: args.timing_faces]
    ms = {name: time_ms(p, timing_faces) for name, p, _, _ in rows if name != "mean shape"}
    command = shlex.join(["python", "-m", "bench.compare_baselines", *(argv if argv is not None else sys.argv[1:])])
    shown = val.resolve().relative_to(ROOT) if val.resolve().is_relative_to(ROOT) else val
    lines = ["# Baselines on the 300w-lite validation split", "", f"`{command}`", "",
             f"Data: `{shown}` ({len(load_faces(val)[0])} faces), the fixed split of "
             "`facemark.data.prepare.split_samples`; figures from `facemark.evaluate.evaluate` on the original images. "
             f"ms/face: one `predict(image, box)` call (crop + model, batch of one, image decoding excluded), "
             f"median over {len(timing_faces)} faces of the fastest of 5 calls, {args.threads} thread(s), "
             f"{machine()} (shared with other jobs while this ran); "
             "size: fp32 weights (the model file for dlib).", ""]
    for box, jitter, rotate, title, suffix in protocols:
        paths, names, table = [], [], []
        for name, predictor, size, note in rows:
            slug = name.replace(" ", "-") + suffix
            result = evaluate(predictor, val, box=box, jitter=jitter, rotate=rotate, out=args.work / slug, name=name)
            print(result["headline"], file=sys.stderr)
            paths.append(args.work / slug / "metrics.json")
            names.append(name)
            s, det = result["summary"], result["detection"]
            cells = [name, f"{s['mean'] * 100:.2f}", f"{s['fr@10'] * 100:.1f}", f"{s['auc@8']:.3f}"]
            cells += [f"{det['rate'] * 100:.1f}"] if det else []
            cells += [f"{ms[name]:.1f}" if name in ms else "-", size] if not suffix else []
            table.append("| " + " | ".join([*cells, note]) + " |")
        cmp = compare(paths, args.work / f"compare{suffix}", names)
        png = args.out / f"ced_baselines{suffix}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cmp["png"], png)
        head = ["model", "NME io %", "FR@10 %", "AUC@8", *(["detection rate %"] if box == "detector" else []),
                *(["ms/face", "size MB"] if not suffix else []), "note"]
        lines += [f"## {title}", "", f"{result['normalisation_text']}.", "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|", *table, "",
                  f"![CED]({png.name})", "", "Full figures (95 % bootstrap CI of the mean, FR@8, AUC@10):", "",
                  cmp["table"].split("\n\n", 1)[1], ""]
    write_report(args.out / "baselines.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

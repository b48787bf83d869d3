"""INT8 ONNX (onnxruntime static quantization): its NME cost and its speed, against the float model.

The float ONNX model is quantized by :func:`facemark.export.quantize_onnx` (what ``facemark export
--int8 DATA`` runs: QDQ format, per-channel int8 weights in 7 bits, uint8 activations, calibrated on
``--calib`` training crops cut as the API cuts them; the model spec copied over). Both models are
then scored on the validation split (ground-truth landmark box, inter-ocular NME, flip test on)
and timed in one run, alternately, on the same faces (``predict``: crop + model + mirrored crop,
batch 1). ``--also LABEL=FILE`` scores and times another ONNX file of the same model beside them
(an INT8 file made another way)::

    python -m bench.quantize_int8 [--model runs/300w_pipnet_resnet075_128_gpu_long/twin.onnx] [--calib 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from bench import machine, write_report
from bench.timing import best_ms
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.evaluate import evaluate
from facemark.geometry import box_from_points
from facemark.images import read_image

ROOT = Path(__file__).resolve().parents[1]


def time_predict(models: dict[str, Landmarker], faces, repeats: int = 3) -> dict[str, float]:
    """Median over faces of the fastest of ``repeats`` ``predict`` calls, the models timed alternately."""
    times = {name: [] for name in models}
    for face in faces:
        image, box = read_image(face.image_path), box_from_points(face.points)
        for name, lm in models.items():
            lm.predict(image, box)  # warm
            times[name].append(best_ms(lambda: lm.predict(image, box), repeats))
    return {name: float(np.median(v)) for name, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "300w_pipnet_resnet075_128_gpu_long" / "twin.onnx")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite")
    ap.add_argument("--calib", type=int, default=256, help="training crops to calibrate on")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for scoring and timing")
    ap.add_argument("--timing-faces", type=int, default=100)
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=FILE",
                    help="another .onnx file of the same model, scored and timed beside (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "int8.md")
    args = ap.parse_args(argv)
    from facemark.export import quantize_onnx  # the train extra (torch), imported when used: --help stays quick

    command = shlex.join(["python", "-m", "bench.quantize_int8", *(argv if argv is not None else sys.argv[1:])])
    float_lm = Landmarker(args.model, num_threads=args.threads)
    int8_path = args.model.with_name(args.model.stem + ".int8.onnx")
    quantize_onnx(args.model, int8_path, args.data, count=args.calib)
    models = {"float32": float_lm, "int8 (QDQ, per-channel 7-bit weights, percentile activation ranges, decoding float)":
              Landmarker(int8_path, num_threads=args.threads)}
    for item in args.also:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            ap.error(f"--also {item!r}: expected LABEL=FILE")
        models[label] = Landmarker(Path(path), num_threads=args.threads)
    def shown(path: Path) -> str:
        return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)

    lines = ["# INT8 ONNX against float32", "", f"`{command}`", "",
             f"Model `{shown(args.model)}`, quantized to `{shown(int8_path)}` ({int8_path.stat().st_size / 1e6:.1f} MB) with "
             f"onnxruntime static quantization calibrated on {args.calib} training crops. Validation split, "
             "ground-truth landmark box, NME normalised by the inter-ocular distance (outer eye corners 36, 45), "
             f"flip test on; `predict` timed on {args.timing_faces} faces, the models alternately in this run, "
             f"{args.threads} onnxruntime thread(s) on {machine()}, median of the fastest of 3 calls.", "",
             "| model | NME io % | 95 % CI | FR@10 % | ms per face |", "|---|---:|---:|---:|---:|"]
    faces, _, _ = load_faces(args.data / "val")
    ms = time_predict(models, faces[: args.timing_faces])
    seen = set()
    for name, lm in models.items():
        result = evaluate(lm, args.data / "val", progress=False)
        s = result["summary"]
        if result.get("seen_in_training"):
            seen.add(f"{result['seen_in_training']['faces']} of the {result['seen_in_training']['evaluated']}")
        lo, hi = s["ci95"]
        lines.append(f"| {name} | {s['mean'] * 100:.2f} | {lo * 100:.2f}-{hi * 100:.2f} | {s['fr@10'] * 100:.1f} | "
                     f"{ms[name]:.2f} |")
    names = list(models)
    if seen:
        lines += ["", f"**Not held out**: {' / '.join(sorted(seen))} validation faces were in the model's training "
                      "data; the rows compare precisions of one model, not its accuracy on new faces."]
    lines += ["", "Time ratio to float32: " + ", ".join(f"{name.split(' (')[0]} {ms[name] / ms[names[0]]:.2f}"
                                                  for name in names[1:]) + "."]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

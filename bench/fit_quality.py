"""Fit and measure the point-score and fit-quality calibration (:mod:`facemark.quality`).

This script collects the predictions; :func:`facemark.calibrate.fit_quality` fits the calibration
and :func:`facemark.calibrate.measure_quality` measures it.

On the faces of the validation split, with the split-trained twin of the shipped model (same
architecture, it never saw these faces): the default detector finds each face (matched to the
truth at IoU >= 0.5), and the model predicts (flip test on) from the calibrated detector box and
from ``--jitters`` copies of it with each edge moved by up to ``±--jitter`` of the box size, so
that there are failures to predict. Per prediction: the raw point features, the detector score
(reported alone for comparison; not a feature since Step 7b), the NME (inter-ocular) and each
point's error.

Figures (out of fold: 5 folds grouped by face, so no face scores itself): the AUROC of
``1 - quality`` for NME > 8 %, and the Spearman correlation of ``point_scores`` with the per-point
error; then the calibration is refitted on every prediction and written to
``bench/results/quality_calibration.json`` and ``bench/results/quality.md``. With
``--write-default``, the shipped model is re-exported from ``--all-checkpoint`` with the
calibration in its spec (``default.pt``, ``default-float.onnx`` and the INT8 ``default.onnx``,
quantized again), and the script checks that the float files give bit-identical points to the old
ones (the INT8 file's change is reported)::

    python -m bench.fit_quality [--model default] [--checkpoint TWIN.pt] [--data FACES]
        [--jitter 0.2] [--jitters 4] [--write-default [--all-checkpoint SHIPPED.pt]]

The presets (``PRESETS``) name each shipped model's checkpoints and faces (``default-5`` is the
default's pass giving five points: it uses the default's calibration; each model is fitted on its
twin's INT8 file, what the shipped model runs on ONNX Runtime). A five-point model of your
own is calibrated the same way (``--checkpoint``, ``--data``): it gets the detector's box mapped to
the five points' box.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench import write_report
from facemark import metrics
from facemark.api import Landmarker
from facemark.calibrate import fit_quality, measure_quality
from facemark.data.faces import load_faces
from facemark.data.store import Store, read_dataset_image
from facemark.evaluate import MATCH_IOU
from facemark.files import write_atomic
from facemark.geometry import best_match, box_from_points, jitter_box
from facemark.quality import GOOD_NME
from facemark.schemes import five_from_68_box, get_scheme
from facemark.spec import MODEL_DIR as DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def collect(checkpoint: str, data: str, jitter: float, jitters: int, seed: int = 0) -> dict:
    """Predictions from detector boxes and jittered copies: raw features, scores, errors.

    A 5-point model gets the detector's calibrated box mapped to the five points' box
    (:func:`facemark.schemes.five_from_68_box`, as ``detect`` does) and is matched to the truth as
    :func:`facemark.evaluate.evaluate` matches it: by the box of the points it predicts from it."""
    lm = Landmarker(checkpoint, backend=None if str(checkpoint).endswith(".onnx") else "torch")
    detector = lm.detector
    scheme = get_scheme(lm.num_points)
    faces, _, _ = load_faces(data)
    cache, rows, missed = {}, [], 0
    for i, face in enumerate(faces):
        image = read_dataset_image(face.image_path)
        if face.image_path not in cache:
            cache[face.image_path] = detector.detect(image)
        found = cache[face.image_path]
        gt = np.asarray(face.points, dtype=np.float64)
        candidates = [detector.landmark_box(d.box) for d in found]
        if lm.num_points == 5:
            candidates = [five_from_68_box(b) for b in candidates]
            j, overlap = best_match([box_from_points(lm.predict(image, b)) for b in candidates], box_from_points(gt))
        else:
            j, overlap = best_match(candidates, box_from_points(gt))
        if j is None or overlap < MATCH_IOU:
            missed += 1
            continue
        box = candidates[j]
        rng = np.random.default_rng([seed, i])
        boxes = [box] + [jitter_box(rng, box, jitter) for _ in range(jitters)]
        for k, (points, features) in enumerate(lm._predict_scored([image], [boxes])[0]):
            norm = metrics.normaliser(gt[None], "inter_ocular", scheme)[0]
            per_point = metrics.point_errors(points[None].astype(np.float64), gt[None])[0] / norm
            rows.append((i, k, float(found[j].score), features, per_point))
    return {
        "face": np.array([r[0] for r in rows]), "jittered": np.array([r[1] > 0 for r in rows]),
        "detector_score": np.array([r[2] for r in rows]), "raw": np.stack([r[3] for r in rows]),
        "point_error": np.stack([r[4] for r in rows]), "faces": len(faces), "missed": missed,
        "flip_test": lm.flip_test,
    }


def write_default(all_checkpoint: str, calibration: dict, name: str = "default") -> dict:
    """Re-export the shipped model ``name`` with the calibration into its files (:data:`SHIPPED`):
    its torch checkpoint and float ONNX, which must give bit-identical points to the shipped ones,
    and its INT8 ONNX, quantized again on :data:`INT8_DATA` (its points may move when the quantizer
    or its calibration crops changed: how far is reported). A file not shipped yet is written and
    compared to nothing. Returns, per file, True or how its points changed."""
    from facemark.export import (  # the train extra (torch), imported when used: --help stays quick
        export_inference_checkpoint,
        export_onnx,
        quantize_onnx,
    )

    files = SHIPPED[name]
    with tempfile.TemporaryDirectory() as tmp:
        new = {kind: Path(tmp) / file for kind, file in files.items()}
        float_onnx = new.get("float", Path(tmp) / "float.onnx")
        if "pt" in new:
            export_inference_checkpoint(all_checkpoint, new["pt"], quality=calibration)
        export_onnx(all_checkpoint, float_onnx, quality=calibration)
        quantize_onnx(float_onnx, new["int8"], INT8_DATA)  # run from the repository root
        size = Landmarker(new["int8"]).spec.input_size
        rng = np.random.default_rng(0)
        faces = Store.open(ROOT / "data" / "300w-lite" / "val", verify=False).images[:24]  # real faces, and noise
        crops = np.stack([cv2.resize(np.asarray(f), (size, size), interpolation=cv2.INTER_AREA) for f in faces]
                         + list(rng.integers(0, 256, size=(8, size, size, 3), dtype=np.uint8)))
        same = {}
        for kind, path in new.items():
            shipped = DEFAULT_MODEL_DIR / path.name
            if not shipped.is_file():
                continue
            before, after = Landmarker(shipped)._run(crops), Landmarker(path)._run(crops)
            if np.array_equal(before, after):
                same[path.name] = True
            elif kind == "int8":
                change = np.linalg.norm(before - after, axis=-1)[: len(faces)].mean() * size  # on the real faces
                same[path.name] = f"quantized again, points moved {change:.3f} px on average in {len(faces)} {size} px face crops"
            else:
                same[path.name] = False
        if False in same.values():
            raise SystemExit(f"re-exported points differ from the shipped model's: {same}; not written")
        for path in new.values():
            write_atomic(DEFAULT_MODEL_DIR / path.name, path.read_bytes())
    return same


def report(m: dict, d: dict, args, seconds: float) -> str:
    r = ["# Per-point confidence and fit quality\n",
         f"`python -m bench.fit_quality {' '.join(shlex.quote(a) for a in sys.argv[1:])}` ({seconds:.0f} s)\n",
         f"Model `{args.checkpoint}` ("
         + ("the shipped model itself, trained on the training split only" if args.checkpoint == args.all_checkpoint
            else "split-trained twin of the shipped model") + f"); faces of `{args.data}` "
         f"({d['faces']} faces, {d['missed']} missed by the detector); per found face, the calibrated detector box "
         f"and {args.jitters} copies with ±{args.jitter * 100:g} % edge jitter: {m['predictions']} predictions "
         f"({'flip test on' if d['flip_test'] else 'one pass, no flip test'}), "
         f"{m['bad']} ({m['bad_rate'] * 100:.1f} %) with NME > {GOOD_NME * 100:g} % "
         f"({'eye-centre distance' if d['point_error'].shape[1] == 5 else 'inter-ocular'}). "
         f"Figures out of fold (5 folds grouped by face).\n",
         "| signal | AUROC for NME > 8 % |", "|---|---|",
         f"| **`quality`** (calibrated) | **{m['auroc']:.3f}** |"]
    r += [f"| {name} alone | {v:.3f} |" for name, v in m["auroc_single"].items()]
    if m["auroc_10"] is not None:
        r.append(f"| `quality`, AUROC for NME > 10 % instead (a failed fit) | {m['auroc_10']:.3f} |")
    if m["auroc_detector_boxes_only"] is not None:
        r.append(f"| `quality`, unjittered detector boxes only | {m['auroc_detector_boxes_only']:.3f} |")
    r += ["", f"Brier score of `quality`: {m['brier']:.3f}.", "",
          "| `quality` | predictions | mean quality | share with NME <= 8 % |", "|---|---|---|---|"]
    r += [f"| {b['bin']} | {b['n']} | {b['mean_quality']:.2f} | {b['good_rate']:.2f} |" if b["n"] else
          f"| {b['bin']} | 0 | - | - |" for b in m["reliability"]]
    r += ["", f"`point_scores` vs per-point error ({m['predictions']} x {d['point_error'].shape[1]} points): "
          f"Spearman correlation **{m['point_spearman']:.3f}**; AUROC for a point error > 8 % "
          f"{m['point_auroc']:.3f} ({m['point_bad_rate'] * 100:.1f} % of points)."]
    return "\n".join(r) + "\n"


#: the shipped models this script calibrates: the split-trained twin it is fitted on (it never saw
#: ``data``; the INT8 file, the features the shipped model will give), the faces, and the checkpoint
#: the shipped files are exported from
PRESETS = {
    # re-exported from the shipped checkpoint itself (its weights; the calibration replaced): the
    # training run it came from (runs/300w_cuhk_pipnet_resnet075_128_ft_all) is not kept
    "default": ("runs/ft_twin3000/twin.int8.onnx", "data/300w-lite/val", "facemark/assets/models/default.pt"),
    "fast": ("runs/300w_cuhk_pipnet_resnet075_128_distil/twin.int8.onnx", "data/300w-lite/val",
             "runs/300w_cuhk_pipnet_resnet075_128_distil_all/last.pt"),
}
#: the files of each shipped model in facemark/assets/models: torch checkpoint, float ONNX, INT8 ONNX
SHIPPED = {"default": {"pt": "default.pt", "float": "default-float.onnx", "int8": "default.onnx"},
           "fast": {"int8": "fast.onnx"}}
#: the prepared faces the shipped INT8 files are calibrated on (their ``train`` split: every face)
INT8_DATA = "data/300w-lite-all"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="default", help="the shipped model to calibrate")
    parser.add_argument("--checkpoint", default=None, help="the split-trained twin (default: the --model preset's)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--jitters", type=int, default=4)
    parser.add_argument("--write-default", action="store_true")
    parser.add_argument("--all-checkpoint", default=None)
    args = parser.parse_args()
    preset = PRESETS[args.model]
    args.checkpoint, args.data, args.all_checkpoint = (
        given or default for given, default in zip((args.checkpoint, args.data, args.all_checkpoint), preset))
    suffix = "" if args.model == "default" else f"-{args.model}"
    start = time.time()
    d = collect(args.checkpoint, args.data, args.jitter, args.jitters)
    m = measure_quality(d)
    note = (f"fitted by facemark.calibrate.fit_quality (python -m bench.fit_quality) on {m['predictions']} "
            f"predictions of {args.checkpoint} on {args.data} "
            f"(detector boxes, ±{args.jitter * 100:g} % jitter); out-of-fold AUROC {m['auroc']:.3f}")
    calibration = fit_quality(d["raw"], d["point_error"], note).to_dict()
    write_atomic(RESULTS / f"quality_calibration{suffix}.json", json.dumps(calibration, indent=1) + "\n")
    text = report(m, d, args, time.time() - start)
    if args.write_default:
        same = write_default(args.all_checkpoint, calibration, args.model)
        files = ", ".join(f"`{file}`" for file in SHIPPED[args.model].values())
        text += (f"\nWritten into `facemark/assets/models/`: {files} (exported from `{args.all_checkpoint}`, the "
                 f"INT8 file quantized on `{INT8_DATA}`); points bit-identical to the previous files: "
                 f"{same or 'no previous file'}.\n")
    write_report(RESULTS / f"quality{suffix}.md", text)


if __name__ == "__main__":
    main()

"""Benchmark inference on the CPU; print a Markdown table and write bench/results/infer.md.

For the torch and ONNX Runtime backends of one model, both limited to ``--threads`` threads:

* ms per face: median wall time of ``Landmarker.predict(image, box)`` (crop + model, batch 1);
* faces/s at batch ``--batch``: ``Landmarker.predict_batch`` on that many faces (crops included);
* detector ms per image: median time of the default detector's ``detect`` (image decoding excluded).

Faces come from a handful of real photos: the 300w-lite images (their .pts give the boxes) or, when
that folder is missing, the bundled sample photo (boxes from the detector).

    python -m bench.bench_infer [--model default|CHECKPOINT.pt|MODEL.onnx] [--repeats 50] [--images N]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2

from bench import machine, write_report
from bench.timing import median_ms
from facemark.api import Landmarker
from facemark.geometry import box_from_points
from facemark.predict import SAMPLE_IMAGE

ROOT = Path(__file__).resolve().parents[1]
LITE = ROOT.parent / "shared" / "data" / "300w-lite"
RESULTS = ROOT / "bench" / "results" / "infer.md"


def load_faces(count: int, landmarker: Landmarker) -> tuple[list, list, str]:
    """``(images, landmark boxes, source)``: one face per image."""
    from facemark.data.formats.pts import read_pts

    pts = sorted(LITE.rglob("*.pts"))[:count] if LITE.is_dir() else []
    if pts:
        images = [cv2.imread(str(p.with_suffix(".jpg"))) for p in pts]
        return images, [box_from_points(read_pts(p)) for p in pts], f"{len(pts)} 300w-lite images"
    image = cv2.imread(str(SAMPLE_IMAGE))
    found = landmarker.detector.detect(image)
    if not found:
        raise SystemExit(f"no face found in {SAMPLE_IMAGE}")
    return [image], [landmarker.detector.landmark_box(found[0].box)], "the bundled sample photo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default",
                        help="'default', a .pt checkpoint (e.g. runs/seed_senet_128/last.pt) or an .onnx model")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--images", type=int, default=8, help="real photos to take faces from")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    rows, detector_ms, name, source = [], None, None, None
    suffix = Path(args.model).suffix
    backends = {".onnx": ("onnx",), ".pt": ("torch",)}.get(suffix, ("torch", "onnx"))  # a file runs on its own
    for backend in backends:
        lm = Landmarker(args.model, backend=backend, num_threads=args.threads)
        if source is None:
            images, boxes, source = load_faces(args.images, lm)
            name = lm.name
            detector_ms = statistics.median(
                median_ms(lambda im=im: lm.detector.detect(im), max(1, args.repeats // 10), warmup=1) for im in images
            )
            detector_name = lm.detector.name
        per_face = statistics.median(
            median_ms(lambda im=im, b=b: lm.predict(im, b), args.repeats) for im, b in zip(images, boxes)
        )
        picks = [i % len(images) for i in range(args.batch)]
        batch_images, batch_boxes = [images[i] for i in picks], [[boxes[i]] for i in picks]
        batch_ms = median_ms(lambda: lm.predict_batch(batch_images, batch_boxes, batch_size=args.batch),
                             max(1, args.repeats // 5))
        precision = lm.meta.get("precision", "float32")  # a shipped name runs another file on each backend
        rows.append((f"{backend} (`{lm.model_path.name}`, {precision})", per_face, 1000 * args.batch / batch_ms))

    import onnxruntime
    import torch

    lines = [
        "# Inference speed (CPU)",
        "",
        f"Model `{name}` ({args.model}), faces from {source}; {args.threads} threads; median of {args.repeats} runs "
        f"(batch: {max(1, args.repeats // 5)}); flip test {'on' if lm.flip_test else 'off'} (the default is on: "
        f"each face is predicted on its crop and the mirrored crop, as one batch). CPU: {machine()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. "
        "Produced by `python -m bench.bench_infer`.",
        "",
        f"| backend | ms per face (crop + model, batch 1) | faces/s (batch {args.batch}) |",
        "| --- | ---: | ---: |",
        *(f"| {backend} | {ms:.2f} | {fps:.0f} |" for backend, ms, fps in rows),
        "",
        f"Detector `{detector_name}` (the default): {detector_ms:.1f} ms per image "
        f"(median over {len(images)} images, detection only).",
    ]
    write_report(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

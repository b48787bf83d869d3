"""End to end against dlib: find the faces in a photo and give their 68 points.

Two pipelines on the same images, in one run:

* facemark: ``Landmarker(model).detect(image)`` (default detector, calibrated box, refine pass);
* dlib: its HOG frontal face detector (no upsampling, dlib's default use) + the 68-point ERT shape
  predictor on the HOG rectangle, exactly as dlib's own examples chain them.

Accuracy, on the fixed 300w-lite validation split (original images): the share of annotated faces
found (a face is found when a pipeline's face, as its calibrated landmark box, reaches IoU >= 0.5
with the true landmark box) and the NME over found faces, normalised by the inter-ocular distance
(outer eye corners); plus facemark's NME with the ground-truth landmark box, so the end-to-end
penalty is visible; with ``--rotate 30`` (the default) both pipelines also run on each photo
turned by a seeded random angle in ±30° about the face (tilted heads, which the split barely
has). dlib's predictor was trained on these very images (the 300-W training set), so its figures
are optimistic.

Speed, on 640x480 photos with one face: the first ``--speed-images`` validation photos scaled to
640 px wide and centre-cropped to 480 rows (the face stays whole). Each pipeline is timed on every
photo (best of ``--repeats`` calls, image decoding excluded), the two alternating photo by photo so
that load on the machine hits both alike; the figure is the median over photos, and the ratio is
facemark's median over dlib's.

    python bench/bench_end_to_end.py [--model default] [--speed-model M] [--data data/300w-lite]
        [--speed-images 100] [--rotate 30]

Writes ``bench/results/end_to_end.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np

from facemark.api import Landmarker
from facemark.data.store import read_image
from facemark.baselines import dlib_shape_model_path
from facemark.evaluate import evaluate, load_faces
from facemark.files import write_atomic
from bench.timing import best_ms

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "end_to_end.md"


class _DlibFace:
    def __init__(self, box, score, points):
        self.box, self.score, self.points = box, score, points


class DlibPipeline:
    """dlib's HOG detector + 68-point shape predictor, the way dlib's examples chain them."""

    name = "dlib HOG + ERT"

    def __init__(self, upsample: int = 0):
        import dlib

        from facemark.detectors import get_detector

        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_shape_model_path()))
        self.upsample = upsample
        # for matching faces to the annotations only: the calibrated dlib-hog box
        self.detector = get_detector("dlib-hog", max_side=None)

    def detect(self, image_bgr: np.ndarray) -> list[_DlibFace]:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        rects, scores, _ = self._hog.run(rgb, self.upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(rgb, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(_DlibFace((rect.left(), rect.top(), rect.right(), rect.bottom()), float(score), points))
        return faces


def photo_640x480(image: np.ndarray) -> np.ndarray:
    """Scale to 640 px wide, centre-crop (or pad by reflection) to 480 rows."""
    h, w = image.shape[:2]
    scaled = cv2.resize(image, (640, max(1, round(h * 640 / w))), interpolation=cv2.INTER_LINEAR)
    rows = scaled.shape[0]
    if rows >= 480:
        top = (rows - 480) // 2
        return np.ascontiguousarray(scaled[top : top + 480])
    pad = 480 - rows
    return cv2.copyMakeBorder(scaled, pad // 2, pad - pad // 2, 0, 0, cv2.BORDER_REFLECT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="'default', a .pt checkpoint or an .onnx model")
    ap.add_argument("--speed-model", default=None,
                    help="model of the timing pass (default: --model); e.g. the shipped default when --model is "
                         "its split-trained twin of the same architecture")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--speed-images", type=int, default=100, help="640x480 photos in the timing pass")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per photo (the fastest counts)")
    ap.add_argument("--no-accuracy", action="store_true", help="timing pass only")
    ap.add_argument("--rotate", type=float, default=30.0,
                    help="also score both pipelines on each photo turned by a random angle in +-this many degrees "
                         "about the face (tilted heads; 0: not)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    landmarker = Landmarker(args.model)
    dlib_pipeline = DlibPipeline()
    val = args.data / "val"
    faces = load_faces(val)[0]
    command = shlex.join(["python", "bench/bench_end_to_end.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# End to end: facemark against dlib", "", f"`{command}`", "",
             f"Model: `{args.model}` ({landmarker.name}), detector `{landmarker.detector.name}`; "
             f"{platform.machine()} CPU, {os.cpu_count()} cores.", ""]

    if not args.no_accuracy:
        rows = []
        gt = evaluate(landmarker, val, box="gt", name="facemark", progress=False)
        end = evaluate(landmarker, val, box="detector", name="facemark", progress=False)
        theirs = evaluate(dlib_pipeline, val, box="detector", detector=dlib_pipeline.detector,
                          name="dlib", progress=False)
        runs = [("facemark, ground-truth box", gt), ("facemark, own detector (end to end)", end),
                ("dlib HOG + ERT, own detector (end to end)", theirs)]
        if args.rotate:
            runs += [(f"facemark, own detector, photos tilted ±{args.rotate:g}°",
                      evaluate(landmarker, val, box="detector", rotate=args.rotate, name="facemark", progress=False)),
                     (f"dlib HOG + ERT, own detector, photos tilted ±{args.rotate:g}°",
                      evaluate(dlib_pipeline, val, box="detector", detector=dlib_pipeline.detector, rotate=args.rotate,
                               name="dlib", progress=False))]
        for label, result in runs:
            s, det = result["summary"], result["detection"]
            found = f"{det['rate'] * 100:.1f} ({det['found']}/{det['attempted']})" if det else "-"
            rows.append(f"| {label} | {s['mean'] * 100:.2f} | {s['median'] * 100:.2f} | {s['fr@10'] * 100:.1f} "
                        f"| {s['auc@8']:.3f} | {found} |")
            print(result["headline"], file=sys.stderr)
        penalty = (end["summary"]["mean"] / gt["summary"]["mean"] - 1) * 100
        lines += [f"## Accuracy: {len(faces)} faces of the 300w-lite validation split", "",
                  f"{gt['normalisation_text'].split(';')[0]}; NME over found faces.", "",
                  "| pipeline | NME io % | median % | FR@10 % | AUC@8 | faces found % |",
                  "|---|---:|---:|---:|---:|---:|", *rows, "",
                  f"End-to-end penalty of facemark (own detector vs ground-truth box): {penalty:+.1f} % relative.",
                  "dlib's predictor was trained on these images (300-W training set): its NME is optimistic.",
                  *([f"Tilted rows: each photo turned by a seeded random angle in ±{args.rotate:g}° about the face "
                     "before detection (the split's faces are mostly upright)."] if args.rotate else []), ""]

    if args.speed_model and args.speed_model != args.model:
        landmarker = Landmarker(args.speed_model)
        lines += [f"Timing pass: model `{args.speed_model}` ({landmarker.name}).", ""]
    photos = [photo_640x480(read_image(f.image_path)) for f in faces[: args.speed_images]]
    for image in photos[:3]:  # warm-up: sessions, first-call allocations
        landmarker.detect(image)
        dlib_pipeline.detect(image)
    ours, theirs_ms, per_photo = [], [], []
    for image in photos:
        a = best_ms(lambda: landmarker.detect(image), args.repeats)
        b = best_ms(lambda: dlib_pipeline.detect(image), args.repeats)
        ours.append(a)
        theirs_ms.append(b)
        per_photo.append(a / b)
    found_ours = sum(bool(landmarker.detect(p)) for p in photos)
    found_dlib = sum(bool(dlib_pipeline.detect(p)) for p in photos)
    ratio = float(np.median(ours) / np.median(theirs_ms))
    lines += [f"## Speed: {len(photos)} photos of 640x480, one face each", "",
              f"Median over photos of the fastest of {args.repeats} calls; detection + landmarks for every face "
              "found; both pipelines timed alternately in this one run.", "",
              "| pipeline | ms per photo | photos with a face found |", "|---|---:|---:|",
              f"| facemark `Landmarker.detect` | {np.median(ours):.1f} | {found_ours}/{len(photos)} |",
              f"| dlib HOG detector + 68-point shape predictor | {np.median(theirs_ms):.1f} | {found_dlib}/{len(photos)} |",
              "", f"**Ratio facemark / dlib: {ratio:.2f}** (median of per-photo ratios: {np.median(per_photo):.2f}).", ""]
    text = "\n".join(lines)
    write_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

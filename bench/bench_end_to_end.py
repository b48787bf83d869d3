"""End to end against dlib: find the faces in a photo and give their 68 points.

Pipelines on the same images, in one run:

* facemark: ``Landmarker(model).detect(image)`` with its defaults, and the variants of
  :data:`VARIANTS` (BlazeFace with the pass checked by box IoU or one pass, flip test on or off, and the
  Step-7c pipeline: MTCNN, calibrated box, refine pass), for accuracy and speed alike;
* dlib: its HOG frontal face detector (no upsampling, dlib's default use) + the 68-point ERT shape
  predictor on the HOG rectangle, exactly as dlib's own examples chain them.

Accuracy, on the fixed 300w-lite validation split (original images): the share of annotated faces
found (a face is found when a pipeline's face, as its calibrated landmark box, reaches IoU >= 0.5
with the true landmark box) and the NME over found faces, normalised by the inter-ocular distance
(outer eye corners); plus facemark's NME with the ground-truth landmark box, so the end-to-end
penalty is visible; with ``--rotate 30`` (the default) the pipelines also run on each photo
turned by a seeded random angle in ±30° about the face (tilted heads, which the split barely
has). dlib's predictor was trained on these very images (the 300-W training set), so its figures
are optimistic. ``--model`` should be a split-trained twin for these figures to be held out.

Speed, per photo, on two shapes: the validation photos as they are (about 400 x 400, one face
each) and the same photos scaled to 640 px wide and cut or padded to 480 rows. Each photo is given
once to each pipeline (a user calls it once per photo), the pipelines taking turns photo by photo
so that load on the machine hits them alike; decoding excluded; the figure is the **mean** over
photos and the ratio facemark's mean over dlib's. ``--speed-model``: the model timed (the shipped
default when ``--model`` is its twin)::

    python -m bench.bench_end_to_end [--model default] [--speed-model M] [--data data/300w-lite]
        [--speed-images 391] [--rotate 30] [--no-accuracy]

Writes ``bench/results/end_to_end.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench import machine, write_report
from bench.timing import taking_turns
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.data.store import read_dataset_image
from facemark.detectors import get_detector
from facemark.evaluate import evaluate

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

        from facemark.baselines import (
            dlib_shape_model_path,  # the train extra (torch), imported when used: --help stays quick
        )

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


DEFAULT = "facemark `Landmarker().detect` (the defaults)"
FLIP_OFF = "facemark, flip test off (`flip_test=False`)"
#: the pipeline variants timed and scored beside the defaults: label -> Landmarker keyword arguments
VARIANTS = {
    "facemark, flip test on (`flip_test=True`)": {"flip_test": True},
    "facemark, BlazeFace, one pass, flip test (`refine=False`)": {"refine": False, "flip_test": True},
    FLIP_OFF: {"flip_test": False},
    "facemark, BlazeFace, one pass, flip test off (`refine=False, flip_test=False`)": {"refine": False,
                                                                                        "flip_test": False},
    "facemark, MTCNN + refine pass (the Step-7c pipeline)": {"detector": "mtcnn", "refine": True},
}


def variant(model, kwargs: dict) -> Landmarker:
    """A Landmarker of one of :data:`VARIANTS`."""
    return Landmarker(model, **kwargs)


def time_per_photo(pipelines: dict, photos: list[np.ndarray], warmup: int = 3) -> tuple[dict, dict]:
    """Milliseconds of one call per photo for each pipeline (taking turns photo by photo, in a
    shuffled order: :func:`bench.timing.taking_turns`) and the photos each found a face in."""
    for image in photos[:warmup]:
        for detect in pipelines.values():
            detect(image)
    labels = list(pipelines)
    times, found = {label: [] for label in labels}, {label: 0 for label in labels}
    for image, order in zip(photos, taking_turns(labels, len(photos))):
        for label in order:
            start = time.perf_counter()
            faces = pipelines[label](image)
            times[label].append(1000 * (time.perf_counter() - start))
            found[label] += bool(faces)
    return times, found


def timing_pass(args, faces: list, also: dict, dlib_pipeline) -> list[str]:
    """The report's speed sections. It runs before the accuracy pass, in a process that has done
    nothing else yet: after the accuracy pass the same pipelines measured 1.2-1.4x slower here (not
    thread pools nor the pipelines' interleaving; a creep of a few per cent after each evaluation),
    and a user's process that detects faces has not scored thousands of them first."""
    lines: list[str] = []
    speed_model = args.speed_model or args.model
    pipelines = {DEFAULT: Landmarker(speed_model).detect}  # label -> detect(image) -> faces
    pipelines.update({label: variant(speed_model, kwargs).detect for label, kwargs in VARIANTS.items()})
    pipelines.update({label: Landmarker(timed).detect for label, (_, timed) in also.items()})
    pipelines["dlib HOG detector + 68-point shape predictor"] = dlib_pipeline.detect
    if args.speed_model and args.speed_model != args.model:
        lines += [f"Timing pass: model `{args.speed_model}`.", ""]
    originals = [read_dataset_image(f.image_path) for f in faces[: args.speed_images]]
    shapes = {f"{len(originals)} validation photos as they are (~{np.mean([max(p.shape[:2]) for p in originals]):.0f} px, "
              "one face each)": originals,
              f"the same {len(originals)} photos as 640x480": [photo_640x480(p) for p in originals]}
    for name, photos in shapes.items():
        times, found = time_per_photo(pipelines, photos)
        dlib_mean = np.mean(times[list(pipelines)[-1]])
        lines += [f"## Speed: {name}", "",
                  "Each photo given once to each pipeline (a user calls it once per photo), the pipelines taking turns "
                  "photo by photo in this one run; decoding excluded. **Mean** over photos; ratio = mean / dlib's mean.",
                  "", "| pipeline | mean ms per photo | median | p90 | ratio to dlib | photos with a face found |",
                  "|---|---:|---:|---:|---:|---:|"]
        for label in pipelines:
            t = np.array(times[label])
            lines.append(f"| {label} | {t.mean():.1f} | {np.median(t):.1f} | {np.percentile(t, 90):.1f} | "
                         f"{t.mean() / dlib_mean:.2f} | {found[label]}/{len(photos)} |")
        lines.append("")
    return lines


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
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL",
                    help="another model's defaults row, scored and timed beside the others (for accuracy, MODEL; "
                         "for timing, MODEL too unless given as LABEL=MODEL:SPEED_MODEL)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--speed-images", type=int, default=391, help="validation photos in the timing pass (each also as 640x480)")
    ap.add_argument("--no-accuracy", action="store_true", help="timing pass only")
    ap.add_argument("--rotate", type=float, default=30.0,
                    help="also score both pipelines on each photo turned by a random angle in +-this many degrees "
                         "about the face (tilted heads; 0: not)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    landmarker = Landmarker(args.model)
    also = {}  # label -> (model scored, model timed)
    for item in args.also:
        label, _, models = item.partition("=")
        scored, _, timed = models.partition(":")
        if not label or not scored:
            ap.error(f"--also {item!r}: expected LABEL=MODEL or LABEL=MODEL:SPEED_MODEL")
        also[f"facemark, {label}"] = (scored, timed or scored)
    dlib_pipeline = DlibPipeline()
    val = args.data / "val"
    faces = load_faces(val)[0]
    command = shlex.join(["python", "-m", "bench.bench_end_to_end", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# End to end: facemark against dlib", "", f"`{command}`", "",
             f"Model: `{args.model}` ({landmarker.name}), detector `{landmarker.detector.name}`; "
             f"{machine()}.", ""]

    speed = timing_pass(args, faces, also, dlib_pipeline)
    if not args.no_accuracy:
        rows = []
        variants = {label: variant(args.model, kwargs) for label, kwargs in VARIANTS.items()}
        plain = variants[FLIP_OFF]
        gt = evaluate(landmarker, val, box="gt", name="facemark", progress=False)
        end = evaluate(landmarker, val, box="detector", name="facemark", progress=False)
        runs = [("facemark, ground-truth box", gt),
                ("facemark, ground-truth box, flip test off", evaluate(plain, val, box="gt", progress=False)),
                (f"{DEFAULT}, own detector (end to end)", end)]
        runs += [(f"{label}, own detector", evaluate(lm, val, box="detector", progress=False))
                 for label, lm in variants.items()]
        for label, (scored, _) in also.items():
            other = Landmarker(scored)
            runs += [(f"{label}, ground-truth box", evaluate(other, val, box="gt", progress=False)),
                     (f"{label}, own detector (end to end)", evaluate(other, val, box="detector", progress=False))]
            if args.rotate:
                runs.append((f"{label}, photos tilted ±{args.rotate:g}°",
                             evaluate(other, val, box="detector", rotate=args.rotate, progress=False)))
        runs.append(("dlib HOG + ERT, own detector (end to end)", evaluate(
            dlib_pipeline, val, box="detector", detector=dlib_pipeline.detector, name="dlib", progress=False)))
        if args.rotate:
            tilted = f"photos tilted ±{args.rotate:g}°"
            runs.append((f"{DEFAULT}, {tilted}",
                         evaluate(landmarker, val, box="detector", rotate=args.rotate, name="facemark", progress=False)))
            runs += [(f"{label}, {tilted}", evaluate(lm, val, box="detector", rotate=args.rotate, progress=False))
                     for label, lm in variants.items()]
            runs.append((f"dlib HOG + ERT, own detector, {tilted}",
                         evaluate(dlib_pipeline, val, box="detector", detector=dlib_pipeline.detector,
                                  rotate=args.rotate, name="dlib", progress=False)))
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

    lines += speed
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hard faces: turned heads (CUHK AFLW test list) and small, degraded faces (a degraded 300w-lite
validation split), end to end, and the 300w-lite validation split as it is.

Rows, each for one pipeline (``--model``, ``--detector``, ``--refine`` or ``--one-pass``, ``--no-flip``):

* **CUHK AFLW** (2995 faces with larger poses; 80 x 80 crops scaled x3): the pipeline's own
  detector finds the face; its points are turned into the five cuhk-5pt points (68 points: eye
  centres = means of 36-41 / 42-47, nose tip 30, mouth corners 48, 54; :func:`facemark.schemes.to_five`);
  a face counts as found when the box of those five points reaches IoU >= 0.5 with the box of the
  true five. NME normalised by the eye-centre distance, over found faces; FR@10: NME > 10 %.
* **degraded 300w-lite validation**: each validation photo scaled so the face's inter-ocular
  distance (outer eye corners) is uniform in 20-30 px, then a Gaussian blur of sigma uniform in
  0-1.5 px and JPEG quality uniform in 40-70 (seeded per face, ``--seed``); end to end
  (:func:`facemark.evaluate.evaluate`, detector protocol), inter-ocular NME over found faces.
* with ``--with-300w`` (for a model that never trained on the validation split): the split as it
  is, ground-truth box and end to end.

Each end-to-end row also gives the AUROC of ``Face.quality`` for telling failed fits (NME > 10 %)
from the rest, over the faces found (the pipeline's ``min_quality`` floor has already dropped some).

The degraded photos and the scaled AFLW crops are written once to ``--cache`` (default
``runs/hard-faces``) and reused::

    python -m bench.bench_hard_faces --model MODEL [--detector NAME] [--refine | --one-pass] [--no-flip] [--label TEXT] [--with-300w]
        [--aflw-only] [--aflw-one-based] [--quality-from SHIPPED_MODEL]

Appends the rows to ``bench/results/hard_faces.md`` (one block per run, with its command).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from bench import SHARED
from facemark.api import Landmarker
from facemark.calibrate import auroc
from facemark.data.faces import load_faces
from facemark.data.formats.cuhk import read_cuhk_list
from facemark.data.record import FaceSample
from facemark.evaluate import evaluate
from facemark.files import write_atomic
from facemark.images import read_image
from facemark.schemes import get_scheme, to_five

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "hard_faces.md"


def degraded_split(faces: list[FaceSample], cache: Path, seed: int = 0) -> list[FaceSample]:
    """The faces' photos scaled to an inter-ocular distance of 20-30 px, blurred (sigma 0-1.5) and
    JPEG-compressed (quality 40-70), seeded per face; written once under ``cache``."""
    folder = cache / f"degraded-val-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, face in enumerate(faces):
        rng = np.random.default_rng([seed, i, 7])
        iod, sigma, quality = rng.uniform(20, 30), rng.uniform(0, 1.5), int(rng.integers(40, 71))
        points = np.asarray(face.points, np.float64)
        path = folder / f"{i:04d}.jpg"
        f = iod / np.linalg.norm(points[36] - points[45])
        if not path.is_file():
            image = read_image(face.image_path)
            size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if sigma > 0.05:
                small = cv2.GaussianBlur(small, (0, 0), sigma)
            ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
            write_atomic(path, data.tobytes())
        height, width = read_image(face.image_path).shape[:2]
        size = np.array([max(1, round(width * f)), max(1, round(height * f))])
        scaled = (points + 0.5) * size / (width, height) - 0.5
        out.append(replace(face, image_path=str(path), points=scaled.astype(np.float32)))
    return out


def aflw_test(cache: Path, factor: int = 3, one_based: bool = False) -> list[FaceSample]:
    """The CUHK AFLW test list, each 80 x 80 crop scaled by ``factor`` (bilinear), written once under
    ``cache``. ``one_based``: its points read as 1-based pixel coordinates (MATLAB's), one crop pixel
    subtracted from x and y (``python -m bench.bench_label_offset`` measures why)."""
    faces = cuhk_list(cache, "new_testing.txt", factor)
    if not one_based:
        return faces
    return [replace(f, points=(np.asarray(f.points, np.float64) - factor).astype(np.float32)) for f in faces]


def cuhk_list(cache: Path, list_name: str, factor: int = 3, limit: int | None = None) -> list[FaceSample]:
    """The first ``limit`` faces of a cuhk-5pt list (``new_testing.txt``: AFLW; ``new_training.txt``:
    LFW and web photos), each 80 x 80 crop scaled by ``factor`` (bilinear), written once under ``cache``."""
    samples = read_cuhk_list(SHARED / "data" / "cuhk-5pt" / list_name)[:limit]
    folder = cache / (f"aflw-x{factor}" if list_name == "new_testing.txt" else f"{Path(list_name).stem}-x{factor}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, sample in enumerate(samples):
        path = folder / f"{i:04d}.png"
        if not path.is_file():
            image = read_image(sample.image_path)
            big = cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
            write_atomic(path, cv2.imencode(".png", big)[1].tobytes())
        points = (np.asarray(sample.points, np.float64) + 0.5) * factor - 0.5
        out.append(replace(sample, image_path=str(path), points=points.astype(np.float32)))
    return out


class FivePoints:
    """A Landmarker seen through the five cuhk-5pt points (:func:`facemark.schemes.to_five`): what
    :func:`facemark.evaluate.evaluate` scores against five-point ground truth."""

    def __init__(self, landmarker: Landmarker):
        self.landmarker, self.detector = landmarker, landmarker.detector
        self.name, self.scheme = landmarker.name, get_scheme(5)
        self.spec = SimpleNamespace(scheme="5")  # evaluate matches five-point models on their points

    def detect(self, image):
        return [replace(face, points=to_five(face.points)) for face in self.landmarker.detect(image)]


#: what the fit-quality column tells apart: a failed fit, NME above 10 %
FAILED_NME = 0.10


def quality_auroc(result: dict) -> str:
    """AUROC of ``1 - Face.quality`` for telling the failed fits (NME > 10 %) of the faces found,
    with the failures counted; "-" where the pipeline gives no quality or nothing failed."""
    scored = [(f["quality"], f["nme"] > FAILED_NME) for f in result["per_face"] if f.get("quality") is not None]
    failed = sum(bad for _, bad in scored)
    if not scored or failed in (0, len(scored)):
        return f"- ({failed} failed)" if scored else "-"
    value = auroc(-np.array([q for q, _ in scored]), np.array([bad for _, bad in scored]))
    return f"{value:.3f} ({failed} failed)"


def row(label: str, result: dict) -> str:
    s, d = result["summary"], result["detection"]
    found = f"{d['rate'] * 100:.1f} ({d['found']}/{d['attempted']})" if d else "-"
    return (f"| {label} | {s['mean'] * 100:.2f} | {s['median'] * 100:.2f} | {s['fr@10'] * 100:.1f} | {found} "
            f"| {quality_auroc(result)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--detector", default=None, help="detector name (default: the Landmarker's default)")
    passes = ap.add_mutually_exclusive_group()
    passes.add_argument("--refine", action="store_true", help="always the second (refine) pass")
    passes.add_argument("--one-pass", action="store_true", help="never a second pass (refine=False)")
    ap.add_argument("--no-flip", action="store_true",
                    help="flip test off (default: the model's own setting: on for the default, off for a one-pass model)")
    ap.add_argument("--label", default=None, help="name of the pipeline in the table")
    ap.add_argument("--quality-from", default=None, metavar="MODEL",
                    help="score fit quality with this model's calibration (the shipped model whose split-trained "
                         "twin --model is: held-out quality figures; its min_quality floor applies as it ships)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--with-300w", action="store_true", help="also the validation split as it is (held-out models)")
    ap.add_argument("--aflw-only", action="store_true", help="only the CUHK AFLW row")
    ap.add_argument("--aflw-one-based", action="store_true",
                    help="read the AFLW test list's points as 1-based pixel coordinates (1 crop pixel less in x and y; "
                         "see bench.bench_label_offset)")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "hard-faces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=None, help="folder for the evaluation reports (CED, worst faces)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(2)
    refine = True if args.refine else (False if args.one_pass else None)
    landmarker = Landmarker(args.model, detector=args.detector, refine=refine, flip_test=False if args.no_flip else None)
    if args.quality_from:
        landmarker.spec = replace(landmarker.spec, quality=Landmarker(args.quality_from).spec.quality)
    suffix = {True: ", refine", False: ", one pass", None: ""}[refine]
    label = args.label or f"{args.model}, {landmarker.detector.name}{suffix}"
    val = load_faces(args.data / "val")[0]
    report = (lambda name: None) if args.report is None else (lambda name: args.report / name)
    aflw_name = "CUHK AFLW test, five points" + (" read as 1-based" if args.aflw_one_based else "") + ", own detector"
    runs = [(aflw_name, evaluate(FivePoints(landmarker), aflw_test(args.cache, one_based=args.aflw_one_based),
                                 box="detector", name=label, progress=False, out=report("aflw")))]
    if not args.aflw_only:
        runs.append(("300w-lite val degraded (iod 20-30 px, blur, JPEG 40-70), own detector", evaluate(
            landmarker, degraded_split(val, args.cache, args.seed), box="detector", name=label, progress=False,
            out=report("degraded"))))
    if args.with_300w and not args.aflw_only:
        runs += [("300w-lite val, ground-truth box", evaluate(landmarker, val, box="gt", name=label, progress=False,
                                                               out=report("val-gt"))),
                 ("300w-lite val, own detector", evaluate(landmarker, val, box="detector", name=label, progress=False,
                                                           out=report("val-detector")))]
    command = shlex.join(["python", "-m", "bench.bench_hard_faces", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"## {label}", "", f"`{command}`", "", "| set | NME % | median % | FR@10 % | found % | quality AUROC, NME > 10 % |",
             "|---|---:|---:|---:|---:|---:|", *(row(name, result) for name, result in runs), ""]
    for _, result in runs:
        print(result["headline"], file=sys.stderr)
    text = "\n".join(lines)
    previous = args.out.read_text() if args.out.is_file() else (
        "# Hard faces\n\nCUHK AFLW: eye-centre NME of the five points over found faces; degraded and plain 300w-lite "
        "validation: inter-ocular NME (outer eye corners) over found faces. `python -m bench.bench_hard_faces --help` "
        "describes the sets.\n\n")
    write_atomic(args.out, previous + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

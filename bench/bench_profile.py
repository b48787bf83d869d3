"""Where a photo's time goes: the landmark network, the detector's network and the rest.

Each model's ``Landmarker(model).detect`` runs on the 300w-lite validation photos as they are and
as 640 x 480 (:func:`bench.bench_end_to_end.photo_640x480`), decoding excluded,
``cv2.setNumThreads(1)``, the models taking turns photo by photo. The time inside ONNX Runtime's
``run`` is counted per session (the landmark model's and BlazeFace's; each session is wrapped in
a timer, nothing else changes), and what is left of the call is "the rest": cutting and resizing
crops, decoding the outputs, placement, the point features and quality, the Python between them.
Also counted: landmark crops per face (2 with the flip test; more where a face is re-cut)::

    python -m bench.bench_profile [--model default] [--also LABEL=MODEL] [--images 391]

Writes ``bench/results/profile.md``. A ratio within one run is what to compare; the machine's
load moves the milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench import machine, write_report
from bench.bench_end_to_end import photo_640x480
from bench.timing import taking_turns
from facemark.api import Landmarker
from facemark.data.faces import load_faces
from facemark.data.store import read_dataset_image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "profile.md"


class TimedSession:
    """An ONNX Runtime session whose ``run`` calls add their wall time and their batch rows up."""

    def __init__(self, session):
        self.session, self.seconds, self.rows = session, 0.0, 0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.rows += len(out[0])
        return out

    def __getattr__(self, name):
        return getattr(self.session, name)


def timed(model: str) -> tuple[Landmarker, TimedSession, TimedSession]:
    """A Landmarker whose landmark and detector sessions are timed."""
    landmarker = Landmarker(model)
    landmarks = TimedSession(landmarker._run.session)
    landmarker._run.session = landmarks
    detector = landmarker.detector
    boxes = TimedSession(detector._session)
    detector._session = boxes
    return landmarker, landmarks, boxes


def profile(models: dict[str, str], photos: list[np.ndarray]) -> list[str]:
    """Markdown rows, one per model: ms per photo, split into landmark network, detector network and
    the rest, and the landmark crops per face found."""
    runs = {label: timed(model) for label, model in models.items()}
    for image in photos[:3]:  # warm-up
        for landmarker, _, _ in runs.values():
            landmarker.detect(image)
    for _, landmarks, boxes in runs.values():
        landmarks.seconds = boxes.seconds = 0.0
        landmarks.rows = 0
    total = dict.fromkeys(runs, 0.0)
    faces = dict.fromkeys(runs, 0)
    labels = list(runs)
    for image, order in zip(photos, taking_turns(labels, len(photos))):
        for label in order:
            start = time.perf_counter()
            faces[label] += len(runs[label][0].detect(image))
            total[label] += time.perf_counter() - start
    rows = []
    for label, (_, landmarks, boxes) in runs.items():
        n = len(photos)
        ms = [1000 * x / n for x in (total[label], landmarks.seconds, boxes.seconds)]
        rest = ms[0] - ms[1] - ms[2]
        rows.append(f"| {label} | {ms[0]:.2f} | {ms[1]:.2f} ({ms[1] / ms[0] * 100:.0f} %) | "
                    f"{ms[2]:.2f} ({ms[2] / ms[0] * 100:.0f} %) | {rest:.2f} ({rest / ms[0] * 100:.0f} %) | "
                    f"{landmarks.rows / max(faces[label], 1):.2f} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a shipped name, a .pt or an .onnx file")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL", help="another model's row (repeatable)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--images", type=int, default=391, help="validation photos (each also as 640x480)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error(f"--images {args.images}: must be at least 1")
    models = {f"`{args.model}`": args.model}
    for item in args.also:
        label, sep, model = item.partition("=")
        if not sep or not label or not model:
            ap.error(f"--also {item!r}: expected LABEL=MODEL")
        models[label] = model
    cv2.setNumThreads(1)
    faces, _, _ = load_faces(args.data)
    originals = [read_dataset_image(f.image_path) for f in faces[: args.images]]
    command = shlex.join(["python", "-m", "bench.bench_profile", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Where a photo's time goes", "", f"`{command}`", "",
             f"`Landmarker(model).detect` with its defaults, mean per photo, decoding excluded; time inside ONNX "
             f"Runtime's `run` per session; the rest is everything else in the call. {machine()}, load "
             f"average at the start {'/'.join(f'{x:.1f}' for x in os.getloadavg())}.", ""]
    for name, photos in {f"{len(originals)} validation photos as they are": originals,
                         f"the same {len(originals)} photos as 640x480": [photo_640x480(p) for p in originals]}.items():
        lines += [f"## {name}", "",
                  "| model | ms per photo | landmark network | detector network | the rest | landmark crops per face |",
                  "|---|---:|---:|---:|---:|---:|", *profile(models, photos), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

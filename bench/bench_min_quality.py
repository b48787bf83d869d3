"""The default fit-quality floor (``Landmarker(min_quality=)``): true faces kept, false detections dropped.

Two sets, both from the fixed 300w-lite validation split, the default pipeline run with no floor
(``min_quality=None``) and every detection's :attr:`Face.quality` recorded:

* **true faces**: each photo as it is; the detection matching the annotated face (its points' box
  at IoU >= 0.5 with the true landmark box) is a true face. Other detections in these photos are
  left out (they may be real, unannotated people).
* **false detections**: the same photos with every annotated face painted over (its crop box, a
  little grown, filled with a blur of the photo at 1/16 scale, so no face is left in it but hair,
  skin-coloured background and clothes are); a detection there that does not overlap another
  annotated face counts as false. Some may still be real faces of unannotated people in the
  background, so this count is an upper bound.

For a list of floors: true faces kept (of those found) and false detections kept. The default
floor (:data:`facemark.api.MIN_QUALITY`) is the highest one that keeps every true face::

    python -m bench.bench_min_quality [--model default] [--data data/300w-lite]

Writes ``bench/results/min_quality.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np

from bench import write_report
from facemark.api import MIN_QUALITY, Landmarker
from facemark.data.faces import load_faces
from facemark.geometry import CropRule, box_from_points, crop_box_from_box, iou
from facemark.images import read_image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "min_quality.md"
FLOORS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def painted_over(image: np.ndarray, boxes: list) -> np.ndarray:
    """``image`` with each landmark box's crop box (grown by 20 %) filled with a coarse blur of the photo."""
    out = image.copy()
    h, w = image.shape[:2]
    coarse = cv2.resize(cv2.resize(image, (max(1, w // 16), max(1, h // 16)), interpolation=cv2.INTER_AREA), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    for box in boxes:
        x0, y0, x1, y1 = crop_box_from_box(box, None, CropRule(top=0.5, bottom=0.25, side=0.25, clip=False))
        x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        out[y0:y1, x0:x1] = coarse[y0:y1, x0:x1]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    landmarker = Landmarker(args.model, detector=args.detector, min_quality=None)
    faces = load_faces(args.data / "val")[0]
    by_photo: dict[str, list] = {}
    for face in faces:
        by_photo.setdefault(face.image_path, []).append(box_from_points(face.points))
    true_q, false_q, missed = [], [], 0
    for path, truths in by_photo.items():
        image = read_image(path)
        found = landmarker.detect(image)
        boxes = [box_from_points(f.points) for f in found]
        for truth in truths:
            scores = [iou(b, truth) for b in boxes]
            k = int(np.argmax(scores)) if scores else -1
            if k >= 0 and scores[k] >= 0.5:
                true_q.append(found[k].quality)
            else:
                missed += 1
        for f in landmarker.detect(painted_over(image, truths)):
            if all(iou(box_from_points(f.points), t) < 0.3 for t in truths):
                false_q.append(f.quality)
    true_q, false_q = np.array(true_q, float), np.array(false_q, float)
    command = shlex.join(["python", "-m", "bench.bench_min_quality", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Fit-quality floor: true faces kept, false detections dropped", "", f"`{command}`", "",
             f"Model `{args.model}` ({landmarker.name}), detector `{landmarker.detector.name}`. {len(faces)} annotated "
             f"validation faces: {len(true_q)} found ({missed} missed by the detector); {len(false_q)} detections in "
             "the same photos with the annotated faces painted over (false, or unannotated people).", "",
             "| min_quality | true faces kept | false detections kept |", "|---:|---:|---:|"]
    for floor in FLOORS:
        mark = " (default)" if abs(floor - MIN_QUALITY) < 1e-9 else ""
        lines.append(f"| {floor:g}{mark} | {(true_q >= floor).sum()}/{len(true_q)} | {(false_q >= floor).sum()}/{len(false_q)} |")
    lines += ["", f"Lowest quality of a true face: {true_q.min():.4f}; false detections' qualities: "
              + ", ".join(f"{q:.3f}" for q in np.sort(false_q)[:20]) + (" ..." if len(false_q) > 20 else ""), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

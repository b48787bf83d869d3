"""Evaluation: run a predictor over annotated faces and score it with :mod:`facemark.metrics`.

A *predictor* is anything with ``predict(image_bgr, box) -> (K, 2)`` points in original-image
pixels, where ``box`` is the tight landmark box of the face (the 300-W ground-truth-box protocol,
see :mod:`facemark.geometry`): :class:`facemark.Landmarker`, or a baseline of
:mod:`facemark.baselines` (mean shape, dlib)::

    from facemark.baselines import MeanShapePredictor
    from facemark.evaluate import evaluate, compare
    floor = MeanShapePredictor.from_store("data/300w-lite/train")
    result = evaluate(floor, "data/300w-lite/val", out="report/mean-shape")
    compare(["report/mean-shape/metrics.json", "report/seed/metrics.json"], "report/compare")

:func:`evaluate` reads each face's *original* image (never the stored crop), so the figures are
those of the inference path. Box protocols: ``"gt"`` gives the predictor the ground-truth
landmark box (optionally with seeded random edge jitter, for robustness figures); ``"detector"``
finds the face with a detector and matches it to the ground truth by IoU: a missed face is
counted in the detection rate, and NME is computed over the found faces only. This module does
not import the inference API: training's validation pass lives beside the train loop
(:func:`facemark.train.validate`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from facemark import metrics, plots
from facemark.data.faces import load_faces, seen_in_training
from facemark.data.record import DataError
from facemark.data.store import read_dataset_image, region_box
from facemark.detectors import DEFAULT_DETECTOR, get_detector
from facemark.extras import MissingExtra
from facemark.files import write_atomic
from facemark.geometry import (
    Box,
    apply_affine,
    best_match,
    box_from_points,
    crop_affine,
    crop_image,
    jitter_box,
    rotate_face,
    warp,
)
from facemark.images import MAX_PIXELS
from facemark.schemes import SCHEMES, resolve_scheme, scheme_from_spec

BOX_PROTOCOLS = ("gt", "detector")
MATCH_IOU = 0.5  # a detection is the annotated face when its landmark box overlaps the true one this much
THRESHOLDS = (0.08, 0.10)  # failure rate and AUC are always reported at 8 % and 10 %


# --------------------------------------------------------------------------- predictors


class Predictor(Protocol):
    """What :func:`evaluate` needs: ``(K, 2)`` points in original pixels from a tight landmark box."""

    def predict(self, image_bgr: np.ndarray, box: Box) -> np.ndarray: ...


# --------------------------------------------------------------------------- evaluation


def _short(protocol: str) -> str:
    """A box protocol's text without its parenthesised details, for figure titles."""
    return protocol.split(" (")[0]


def _protocol_text(box: str, jitter: float, seed: int, detector_name: str, rotate: float = 0.0) -> str:
    if box == "detector":
        turned = (f" on each photo rotated by a random angle in ±{rotate:g}° about the face (seed {seed})"
                  if rotate else "")
        return (f"{detector_name} detector boxes{turned} (calibrated to landmark boxes; a face counts as found at "
                f"IoU >= {MATCH_IOU} with its true landmark box; NME over found faces)")
    text = "ground-truth landmark box"
    if rotate:
        text += f" of the face rotated by a random angle in ±{rotate:g}° about its centre"
    if jitter:
        text += f" with ±{jitter * 100:g} % random edge jitter"
    return text + (f" (seed {seed})" if jitter or rotate else "")


def _detect_and_match(predictor, detector, image: np.ndarray, truth: Box, cache: dict, key: str):
    """Points of the detection matching ``truth`` (None when the face is missed), the time taken and
    the face's fit quality (``Face.quality``; None where the predictor gives none).

    A predictor with its own ``detect`` (a Landmarker) runs its full pipeline (detect, calibrated
    box, refine); other predictors get the matched detection's calibrated landmark box.
    """
    start = time.perf_counter()
    if key not in cache:  # several annotated faces may share one image: detect once
        own = hasattr(predictor, "detect")
        found = predictor.detect(image) if own else detector.detect(image)
        boxes = [detector.landmark_box(f.box) for f in found]
        if own and getattr(getattr(predictor, "spec", None), "scheme", None) == "5":
            # a 5-point model: match on the box of its predicted points (the calibrated 68-point box
            # mapped to the five points', facemark.schemes.five_from_68_box, is too rough for IoU >= 0.5)
            boxes = [box_from_points(f.points) for f in found]
        cache[key] = [(box, getattr(f, "points", None), None if getattr(f, "quality", None) is None else float(f.quality))
                      for box, f in zip(boxes, found)]
    candidates = cache[key]
    i, overlap = best_match([c[0] for c in candidates], truth)
    if i is None or overlap < MATCH_IOU:
        return None, time.perf_counter() - start, None
    box, points, quality = candidates[i]
    if points is None:
        points = predictor.predict(image, box)
    return np.asarray(points, dtype=np.float64), time.perf_counter() - start, quality


def _store_scheme(data, split: str, num_points: int):
    """The scheme recorded in the evaluated store (``prepare --scheme``), else the built-in one of
    ``num_points`` (None when there is none)."""
    if isinstance(data, (str, Path)):
        for path in (Path(data), Path(data) / split):
            index = path / "index.json"
            if index.is_file():
                recorded = json.loads(index.read_text()).get("scheme")
                if recorded is not None:  # a built-in name or the full mapping, never a path
                    return scheme_from_spec(recorded, num_points, f"{index}: scheme")
                break
    return SCHEMES.get(num_points)


#: the largest box jitter: each edge moves by up to this fraction of the box (at 0.5 a box can vanish)
MAX_JITTER = 0.4


def check_settings(box: str = "gt", jitter: float = 0.0, rotate: float = 0.0, max_error: float = 0.10,
                   worst_k: int = 16) -> None:
    """ValueError naming the setting unless the evaluation protocol's values are usable (finite, in range)."""
    if box not in BOX_PROTOCOLS:
        raise ValueError(f"box must be one of {BOX_PROTOCOLS}, got {box!r}")
    checks = (("jitter", jitter, 0.0, MAX_JITTER, "a fraction of the box"), ("rotate", rotate, 0.0, 180.0, "degrees"),
              ("max_error", max_error, 1e-6, 1.0, "a fraction of the normalising distance"))
    for name, value, low, high, unit in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise ValueError(f"{name} must be in {low:g}..{high:g} ({unit}), got {value!r}")
    if isinstance(worst_k, bool) or not isinstance(worst_k, int) or worst_k < 0:
        raise ValueError(f"worst_k must be a whole number >= 0, got {worst_k!r}")


def evaluate(
    predictor: Predictor,
    data,
    box: str = "gt",
    normalisation: str = "inter_ocular",
    max_error: float = 0.10,
    out: str | Path | None = None,
    worst_k: int = 16,
    jitter: float = 0.0,
    rotate: float = 0.0,
    split: str = "val",
    detector=None,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
    scheme=None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = None,
) -> dict:
    """Score ``predictor`` on the faces of ``data`` (see :func:`~facemark.data.faces.load_faces`); returns
    the metrics dict.

    ``box``: ``"gt"`` (tight ground-truth landmark box, each edge moved by up to ``±jitter`` of
    the box size, seeded per face) or ``"detector"`` (``detector``: a name or object, default the
    predictor's own detector, else :data:`~facemark.detectors.DEFAULT_DETECTOR`). ``rotate``
    (either protocol): each image and its points are first turned by a seeded random angle in
    ``±rotate`` degrees about the face, a tilted head. A face whose image
    is missing or corrupt is listed in ``skipped`` with the reason. With ``out``, writes
    ``metrics.json``, ``report.md``, ``ced.png`` and ``worst.png`` (the ``worst_k`` worst faces).
    A model that records the faces it was trained on (its ``trained_on``,
    :func:`facemark.data.faces.training_record`) is checked against the evaluated ones:
    ``seen_in_training`` counts those it has seen, and the headline and report warn when there are any.
    ``max_pixels``, ``max_bytes``: the image caps (:mod:`facemark.images`; ``facemark --max-mpx``, ``--max-mb``).
    """
    check_settings(box, jitter, rotate, max_error, worst_k)
    faces, skipped, data_text = load_faces(data, split)
    if not faces:
        raise ValueError(f"{data_text}: no faces to evaluate")
    name = name or getattr(predictor, "name", type(predictor).__name__)
    # the scheme for NME normalisation and per-group errors: ``scheme`` (--scheme), else the model's
    # (its spec), else the data store's (prepare --scheme), else the point count's built-in one
    num_points = len(faces[0].points)
    model_points = getattr(predictor, "num_points", None)  # a Landmarker's; baselines fit the data
    if model_points is not None and int(model_points) != num_points:
        model_file = getattr(predictor, "model_path", None)
        raise ValueError(f"{data_text}: its faces have {num_points} points, the model {name}"
                         f"{f' ({model_file})' if model_file else ''} gives {model_points}: evaluate a "
                         f"{model_points}-point model on {model_points}-point data (`facemark data convert --to`)")
    if scheme is not None:
        scheme = resolve_scheme(scheme, num_points)
    elif getattr(predictor, "scheme", None) is not None and predictor.scheme.num_points == num_points:
        scheme = predictor.scheme
    else:
        scheme = _store_scheme(data, split, num_points)
    detector_name = ""
    if box == "detector":
        if hasattr(predictor, "detect"):  # a Landmarker: its own detector, so its own pipeline
            detector = predictor.detector
        elif detector is None or isinstance(detector, str):
            detector = get_detector(detector or DEFAULT_DETECTOR)
        detector_name = getattr(detector, "name", type(detector).__name__)
    protocol = _protocol_text(box, jitter, seed, detector_name, rotate)
    norm_text = metrics.describe(normalisation, scheme, protocol)

    records, missed, seconds, cache = [], [], [], {}
    for i, face in enumerate(tqdm(faces, desc=f"eval {name}", unit="face", disable=not progress)):
        try:
            image = read_dataset_image(face.image_path, max_pixels, max_bytes)
        except DataError as err:
            skipped.append({"id": face.sample_id, "file": str(face.image_path), "reason": err.reason})
            continue
        gt = np.asarray(face.points, dtype=np.float64)
        matrix = None  # the rotation applied to the photo (rotate), for the worst-faces gallery
        if rotate:
            image, gt, matrix = rotate_face(image, gt, np.random.default_rng([seed, i, 1]).uniform(-rotate, rotate))
        truth = box_from_points(gt)
        if box == "detector":
            key = f"{face.image_path}#{i}" if rotate else str(face.image_path)  # rotated: each face its own photo
            pred, dt, quality = _detect_and_match(predictor, detector, image, truth, cache, key)
            if pred is None:
                missed.append(face.sample_id)
                continue
        else:
            quality = None  # predict gives points only
            face_box = jitter_box(np.random.default_rng([seed, i]), truth, jitter) if jitter else truth
            start = time.perf_counter()
            pred = np.asarray(predictor.predict(image, face_box), dtype=np.float64)
            dt = time.perf_counter() - start
        try:
            visible = None if face.visible is None else face.visible[None]
            error = float(metrics.nme(pred, gt, normalisation, scheme, visible)[0])
            per_point = metrics.point_errors(pred, gt)[0] / metrics.normaliser(gt, normalisation, scheme)[0]
        except ValueError as err:  # degenerate ground truth (zero normaliser, no visible point)
            skipped.append({"id": face.sample_id, "file": str(face.image_path), "reason": f"ground truth: {err}"})
            continue
        if face.visible is not None:
            per_point = np.where(face.visible, per_point, np.nan)
        points_used = int(metrics.evaluated_points(gt, visible)[0])  # partial labels: missing points are left out
        seconds.append(dt)
        records.append({"id": face.sample_id, "subset": face.subset, "file": str(face.image_path), "nme": error,
                        "pred": pred, "gt": gt, "per_point": per_point, "points": points_used, "matrix": matrix,
                        "quality": quality})

    attempted = len(records) + len(missed)
    if not records:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise ValueError(f"{data_text}: no face could be evaluated ({len(missed)} missed by the detector, "
                         f"{len(skipped)} skipped{': ' + reasons if reasons else ''})")
    errors = np.array([r["nme"] for r in records])
    thresholds = tuple(sorted({*THRESHOLDS, float(max_error)}))
    subsets = sorted({r["subset"] for r in records if r["subset"]})
    result = {
        "name": name,
        "data": data_text,
        "box": box,
        "box_protocol": protocol,
        "jitter": float(jitter),
        "rotate": float(rotate),
        "seed": int(seed),
        "detector": detector_name or None,
        "normalisation": normalisation,
        "normalisation_text": norm_text,
        "max_error": float(max_error),
        "faces": len(faces) + sum(1 for s in skipped if s["reason"].startswith("annotation")),
        "evaluated": len(records),
        # points scored (present and visible) out of all the evaluated faces' points
        "points_evaluated": int(sum(r["points"] for r in records)),
        "points_total": int(sum(len(r["gt"]) for r in records)),
        "skipped": skipped,
        "detection": None if box != "detector" else {
            "found": len(records), "attempted": attempted, "rate": len(records) / max(attempted, 1),
            "missed": missed, "note": "NME, CED, AUC and failure rates are over the found faces only",
        },
        "summary": metrics.summarise(errors, thresholds),
        "subsets": {s: metrics.summarise(errors[[r["subset"] == s for r in records]], thresholds) for s in subsets},
        "per_point": np.nanmean([r["per_point"] for r in records], axis=0).round(6).tolist(),
        "median_ms_per_face": float(np.median(seconds) * 1000),
        "per_face": [{"id": r["id"], "subset": r["subset"], "nme": r["nme"], "points": r["points"],
                      "quality": r["quality"]} for r in records],
    }
    meta = getattr(predictor, "meta", None)  # a Landmarker's spec and provenance
    seen = _seen_faces(meta.get("trained_on") if isinstance(meta, dict) else None, records)
    result["seen_in_training"] = None if seen is None else {"faces": len(seen), "evaluated": len(records), "ids": seen}
    s = result["summary"]
    lo, hi = s["ci95"]
    result["headline"] = (
        f"{name}: NME {s['mean'] * 100:.2f} % [95 % CI {lo * 100:.2f}-{hi * 100:.2f}], "
        f"FR@{max_error * 100:g} {s[f'fr@{max_error * 100:g}'] * 100:.1f} %, AUC@{max_error * 100:g} "
        f"{s[f'auc@{max_error * 100:g}']:.3f} over {len(records)} faces; {norm_text}"
        + (f"; detection rate {result['detection']['rate'] * 100:.1f} %" if result["detection"] else "")
        + (f"; {len(skipped)} skipped" if skipped else "")
        + (f"; WARNING: {_seen_text(result['seen_in_training'])}" if seen else "")
    )
    if out is not None:
        _write_outputs(result, records, Path(out), worst_k, scheme, max_pixels, max_bytes)
    return result


# --------------------------------------------------------------------------- outputs


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


#: how ``compare`` marks a run whose faces the model trained on
NOT_HELD_OUT = "(NOT HELD OUT)"


def _photo_ids(sample_id: str, image_file: str) -> list[str]:
    """The ids a face may have had in training: its own (the annotation path under the folder given to
    eval) and its photo's path, without suffix, under each folder above it (``afw/1051618982_1``,
    ``300w-lite/afw/1051618982_1``, ...), so a face is known whatever folder (a dataset, one of its
    sub-folders, a store) it is evaluated from."""
    parts = Path(image_file).resolve().with_suffix("").parts
    return [sample_id, *("/".join(parts[i:]) for i in range(1, len(parts)))]


def _seen_faces(record, records: list[dict]) -> list[str] | None:
    """The ids of the evaluated faces that the model's ``trained_on`` ``record`` holds, matched by
    :func:`_photo_ids`; None when the model has no usable record."""
    ids = {r["id"]: _photo_ids(r["id"], r["file"]) for r in records}
    known = seen_in_training(record, [i for candidates in ids.values() for i in candidates])
    if known is None:
        return None
    known = set(known)
    return [r["id"] for r in records if known.intersection(ids[r["id"]])]


def _seen_text(seen: dict) -> str:
    return (f"{seen['faces']} of the {seen['evaluated']} evaluated faces were in the model's training data "
            "(its trained_on record): not a held-out figure")


def _summary_row(label: str, s: dict) -> str:
    lo, hi = s["ci95"]
    return (f"| {label} | {s['count']} | {_pct(s['mean'])} | {_pct(lo)}-{_pct(hi)} | {_pct(s['median'])} | "
            f"{_pct(s['p90'])} | {_pct(s['p95'])} | {_pct(s['p99'])} | {s['fr@8'] * 100:.1f} | "
            f"{s['fr@10'] * 100:.1f} | {s['auc@8']:.3f} | {s['auc@10']:.3f} |")


def _report(result: dict, scheme, worst_k: int) -> str:
    lines = [
        f"# Evaluation: {result['name']}", "",
        f"- data: {result['data']}: {result['faces']} faces, {result['evaluated']} evaluated, "
        f"{len(result['skipped'])} skipped"
        + (f"; {result['points_evaluated']} of {result['points_total']} points evaluated (the rest missing "
           "or occluded)" if result.get("points_evaluated", 0) < result.get("points_total", 0) else ""),
        f"- box protocol: {result['box_protocol']}",
        f"- figures: {result['normalisation_text']}; in % (AUC as a fraction)",
    ]
    if (result.get("seen_in_training") or {}).get("faces"):
        lines.append(f"- **warning**: {_seen_text(result['seen_in_training'])}")
    if result["detection"]:
        d = result["detection"]
        lines.append(f"- detection rate: {d['rate'] * 100:.1f} % ({d['found']} / {d['attempted']}); {d['note']}")
    lines += [
        f"- median time per face: {result['median_ms_per_face']:.1f} ms (predictor call, image decoding excluded)", "",
        "| subset | faces | NME % | 95 % CI | median | p90 | p95 | p99 | FR@8 % | FR@10 % | AUC@8 | AUC@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        _summary_row("all", result["summary"]),
        *(_summary_row(name, s) for name, s in result["subsets"].items()),
    ]
    if scheme is not None and scheme.groups:
        per_point = np.array(result["per_point"])
        groups = {g: float(np.nanmean(per_point[list(idx)])) for g, idx in scheme.groups.items()}
        lines += ["", "Mean error per face region (NME %, same normalisation):", "",
                  "| " + " | ".join(groups) + " |", "|" + "---:|" * len(groups),
                  "| " + " | ".join(_pct(v) for v in groups.values()) + " |"]
    if result["skipped"]:
        lines += ["", "Skipped:", "", *(f"- `{s['file']}`: {s['reason']}" for s in result["skipped"])]
    ced = ["![CED](ced.png)"] if result.get("ced_png", True) is not None else [
        'CED plot not drawn (matplotlib is not installed: pip install "facemark[plots]")']
    lines += ["", *ced, "",
              f"Worst {worst_k} faces (red: prediction, green: ground truth):", "", "![worst faces](worst.png)", ""]
    return "\n".join(lines)


def _worst_gallery(records: list[dict], k: int, size: int = 192, max_pixels: int = MAX_PIXELS,
                   max_bytes: int | None = None) -> np.ndarray:
    """The ``k`` worst faces, each cut from its image around the ground truth, prediction drawn over it."""
    tiles = []
    for r in sorted(records, key=lambda r: r["nme"], reverse=True)[:k]:
        region = region_box(r["gt"], 1.2)  # square, centred on the recipe crop box
        to_tile = crop_affine(region, size)
        image = read_dataset_image(r["file"], max_pixels, max_bytes)
        if r["matrix"] is not None:  # the photo as it was scored (rotate)
            image = warp(image, r["matrix"], (image.shape[1], image.shape[0]))
        tile = plots.draw_comparison(crop_image(image, region, size),
                                     apply_affine(to_tile, r["pred"]), apply_affine(to_tile, r["gt"]), radius=1.5)
        for text, y in ((r["id"][-28:], 13), (f"NME {r['nme'] * 100:.1f}%", size - 6)):  # on dark boxes
            tile = plots.draw_label(tile, text, (4, y), 0.38)
        tiles.append(tile)
    grid = plots.make_grid(tiles, cols=int(np.ceil(np.sqrt(len(tiles)))), pad=2, fill=255)
    return plots.draw_legend(grid, plots.COMPARISON_LEGEND, scale=0.38, below=True)  # the key to the marks


def _write_outputs(result: dict, records: list[dict], out: Path, worst_k: int, scheme, max_pixels: int = MAX_PIXELS,
                   max_bytes: int | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    curves = {"all": [r["nme"] for r in records]}
    if len(result["subsets"]) > 1:
        curves.update({s: [r["nme"] for r in records if r["subset"] == s] for s in result["subsets"]})
    try:
        plots.plot_ced(metrics.ced_curves(curves, result["max_error"]), out / "ced.png", result["max_error"],
                       title=f"{result['name']}: {_short(result['box_protocol'])}",
                       xlabel=f"{metrics.describe(result['normalisation'], scheme)} (%)")
    except MissingExtra as err:  # the plain install: every figure but the plot
        result["ced_png"] = None
        print(f"{out / 'ced.png'} not drawn: {err}", file=sys.stderr)
    if worst_k > 0:
        plots.write_image(out / "worst.png", _worst_gallery(records, worst_k, max_pixels=max_pixels, max_bytes=max_bytes))
    # atomic like the PNGs, so a reader (compare, a dashboard) never sees half a file
    write_atomic(out / "metrics.json", json.dumps(result, indent=1))
    write_atomic(out / "report.md", _report(result, scheme, worst_k))


# --------------------------------------------------------------------------- comparison


def compare(metrics_paths: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None) -> dict:
    """Overlay the CEDs of several ``metrics.json`` files (``out/ced.png``) and tabulate them
    (``out/compare.md``); returns ``{"table": markdown, "png": path, "markdown": path}``.

    All runs must share one normalisation (curves of different normalisations are not comparable);
    box protocols may differ and are shown per row. A run scored on faces its model trained on
    (``seen_in_training``) is marked :data:`NOT_HELD_OUT` in the table and the plot's legend, with a note.
    """
    if not metrics_paths:
        raise ValueError("compare needs at least one metrics.json")
    runs = []
    for path in metrics_paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metrics file not found")
        runs.append(json.loads(path.read_text()))
    kinds = {r["normalisation"] for r in runs}
    if len(kinds) > 1:
        raise ValueError(f"the runs use different normalisations {sorted(kinds)}; their NMEs are not comparable")
    protocols = {_short(r["box_protocol"]) for r in runs}
    labels = list(names) if names else [r["name"] for r in runs]
    if len(protocols) > 1:  # e.g. one model with gt and detector boxes: the protocol goes in the legend
        labels = [f"{label}, {_short(r['box_protocol'])}" for label, r in zip(labels, runs)]
    for i, label in enumerate(labels):  # still ambiguous: name the run's folder too
        if labels.count(label) > 1:
            labels[i] = f"{label} [{Path(metrics_paths[i]).parent.name}]"
    # a run scored on faces the model trained on (eval's seen_in_training) is marked in the legend and table
    flagged = [bool((r.get("seen_in_training") or {}).get("faces")) for r in runs]
    labels = [f"{label} {NOT_HELD_OUT}" if flag else label for label, flag in zip(labels, flagged)]
    max_error = max(r["max_error"] for r in runs)
    out = Path(out)
    # the scheme (for the eye-corner indices) follows from the number of points in per_point
    norm_text = metrics.describe(runs[0]["normalisation"], SCHEMES.get(len(runs[0]["per_point"])))
    title = "Cumulative error distribution" + (f": {protocols.pop()}" if len(protocols) == 1 else "")
    errors = {label: [f["nme"] for f in r["per_face"]] for label, r in zip(labels, runs)}
    png = plots.plot_ced(metrics.ced_curves(errors, max_error), out / "ced.png", max_error, title=title,
                         xlabel=f"{norm_text} (%)")
    rows = ["| run | box protocol | faces | NME % | 95 % CI | FR@8 % | FR@10 % | AUC@8 | AUC@10 | detection rate |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in zip(labels, runs):
        s, det = r["summary"], r.get("detection")
        lo, hi = s["ci95"]
        rows.append(f"| {label} | {r['box_protocol']} | {s['count']} | {_pct(s['mean'])} | {_pct(lo)}-{_pct(hi)} | "
                    f"{s['fr@8'] * 100:.1f} | {s['fr@10'] * 100:.1f} | {s['auc@8']:.3f} | {s['auc@10']:.3f} | "
                    f"{_pct(det['rate']) + ' %' if det else '-'} |")
    notes = [f"- {label}: {_seen_text(r['seen_in_training'])}" for label, r, flag in zip(labels, runs, flagged) if flag]
    table = f"{norm_text}; NME in %.\n\n" + "\n".join(rows) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
    text = f"# Comparison\n\n{table}\n![CED](ced.png)\n"
    markdown = write_atomic(out / "compare.md", text)
    return {"table": table, "png": png, "markdown": markdown}

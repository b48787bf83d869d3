"""Video bench: accuracy (NME) and flicker (NMF) of per-frame detection, tracking, and tracking + smoothing.

There is no annotated video, so clips with exactly known points are made from the annotated
300w-lite validation photos (:func:`facemark.clips.make_clip`), 640x480 with one face about 170 px across:

* still: the same photo in every frame, with fresh sensor noise and JPEG re-compression per frame;
* moving: the photo translated, rotated and zoomed along a smooth known trajectory (a few px per
  frame), the points warped with it; noise and JPEG as above.

The pipelines on each clip, the face compared with the true points of every frame:

* raw: :meth:`Landmarker.detect` on every frame (detector, placement, the model's flip test);
* tracking: :meth:`Landmarker.track` without smoothing (detector every ``--every`` frames, checking
  the faces in hand; one crop per face and frame where the previous frame's points place it, held
  steady, :class:`facemark.placement.SteadyPlacement`);
* tracking, crops not steadied: the same with ``steady=False`` (each crop exactly where the points say);
* tracking, flip test on: ``flip=True`` (each crop and its mirror);
* tracking + smoothing: :meth:`Landmarker.track` with the One-Euro defaults (:class:`Smoothing`).

NME and NMF (:func:`facemark.metrics.nmf`) are normalised by the inter-ocular distance. A One-Euro
sweep re-smooths the tracked points offline (the crops come from the raw points, so this equals a
run with those settings) to show how the defaults were chosen, with the lag each adds on the moving
clips (smoothed minus raw tracked points, along each point's true motion); a sweep of
:class:`~facemark.placement.Steadiness` shows how the crop's defaults were chosen. Speed: the time per
frame of :meth:`Landmarker.track` against :meth:`Landmarker.detect` on every frame of the same
moving clips (one face in 640x480), the two taking turns clip by clip, and the mix of detector frames.

    python -m bench.bench_video [--clips 20] [--frames 60] [--every 10] [--data data/300w-lite]

Writes ``bench/results/video.md``.
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
from facemark.api import Landmarker
from facemark.clips import make_clip
from facemark.data.faces import load_faces
from facemark.filters import OneEuroFilter
from facemark.geometry import box_from_points, iou
from facemark.images import load_image
from facemark.metrics import nme, nmf
from facemark.placement import Steadiness
from facemark.track import FaceTracker, Smoothing, VideoTracker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "video.md"


def pick(faces, truth: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, object, bool]:
    """The face overlapping the true landmark box most: (points, face, found); the previous points when none."""
    box = box_from_points(truth)
    best = max(faces, key=lambda f: iou(box_from_points(f.points), box), default=None)
    if best is None or iou(box_from_points(best.points), box) < 0.3:
        return (truth if previous is None else previous), None, False
    return np.asarray(best.points, np.float64), best, True


def run_pipeline(results_of_frames, truth: np.ndarray) -> tuple[np.ndarray, list, int]:
    """Points (T, K, 2) of the true face in each frame's results, those faces, and the frames it was missed."""
    points, faces, missed, previous = [], [], 0, None
    for faces_now, true in zip(results_of_frames, truth):
        previous, face, found = pick(faces_now, true, previous)
        points.append(previous)
        faces.append(face)
        missed += not found
    return np.stack(points), faces, missed


def smooth_offline(faces: list, settings: Smoothing, fps: float) -> np.ndarray:
    """The tracked raw faces re-smoothed with ``settings`` (equal to tracking with them: crops use raw points)."""
    tracker, out, previous = FaceTracker(settings), [], None
    for t, face in enumerate(faces):
        if face is None:
            out.append(previous)
            continue
        previous = np.asarray(tracker.update([face], t / fps)[0].points, np.float64)
        out.append(previous)
    return np.stack(out)


def lag_px(smoothed: np.ndarray, raw: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mean lag in px along each point's true motion, mean true speed in px/frame) over moving frames."""
    velocity = np.diff(truth, axis=0)  # (T-1, K, 2)
    speed = np.linalg.norm(velocity, axis=-1)
    moving = speed > 0.5
    direction = velocity / np.maximum(speed, 1e-9)[..., None]
    behind = -np.sum((smoothed[1:] - raw[1:]) * direction, axis=-1)
    return float(behind[moving].mean()), float(speed[moving].mean())


def ramp_lag(settings: Smoothing, speed: float = 2.0, face: float = 200.0, fps: float = 30.0) -> float:
    """Steady lag (px) of the filter behind a face of ``face`` px moving ``speed`` px per frame (noise-free)."""
    f = OneEuroFilter(settings.min_cutoff, settings.beta, settings.d_cutoff)
    out = [f(np.array([speed * t / face]), t / fps)[0] * face for t in range(150)]
    return float(speed * 149 - out[-1])


def timed(tracker: VideoTracker, frames, track_ms: list, detect_ms: list):
    """``tracker.run(frames)``, timing each frame into ``track_ms`` or ``detect_ms`` (detector frames)."""
    run = tracker.run(frames)
    while True:
        before, start = tracker.detector_frames, time.perf_counter()
        try:
            faces = next(run)
        except StopIteration:
            return
        (detect_ms if tracker.detector_frames > before else track_ms).append(1000 * (time.perf_counter() - start))
        yield faces


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "300w-lite", help="prepared folder (val/ store)")
    ap.add_argument("--clips", type=int, default=20, help="validation photos, each made into a still and a moving clip")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--every", type=int, default=10, help="tracking: detector period in frames")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    lm = Landmarker(args.model, num_threads=args.threads)
    faces = load_faces(args.data / "val" if (args.data / "val").is_dir() else args.data)[0]
    chosen = [faces[i] for i in np.linspace(0, len(faces) - 1, args.clips).round().astype(int)]
    sweep = [Smoothing(min_cutoff=c, beta=b) for c in (0.1, 0.3, 1.0) for b in (30.0, 60.0, 100.0, 200.0, 400.0)]
    default = Smoothing()
    if default not in sweep:
        sweep.append(default)
    nme_of = lambda p, t: float(nme(p, t).mean())  # noqa: E731
    rows = {kind: {name: {"nme": [], "nmf": []}
                   for name in ("raw", "tracking", "tracking, crops not steadied", "tracking, flip test on",
                                "tracking + smoothing")}
            for kind in ("still", "moving")}
    swept = {kind: {s: {"nme": [], "nmf": [], "lag": []} for s in sweep} for kind in ("still", "moving")}
    steadiness = [Steadiness(), Steadiness(ahead=False), Steadiness(1.0, 100.0), Steadiness(0.3, 1000.0), False]
    steadied = {kind: {s: {"nme": [], "nmf": []} for s in steadiness} for kind in ("still", "moving")}
    missed = {kind: {"raw": 0, "tracking": 0} for kind in rows}
    speeds, timing = [], {"frames": 0, "detector_frames": 0, "seconds": 0.0, "raw_seconds": 0.0, "flip_seconds": 0.0}
    track_ms, detect_ms = [], []  # per frame of the moving clips' tracking runs
    for n, sample in enumerate(chosen):
        image = load_image(sample.image_path)
        for kind in ("still", "moving"):
            frames, truth = make_clip(image, sample.points, args.frames, kind, seed=n)
            start = time.perf_counter()
            raw_points, _, miss = run_pipeline((lm.detect(f) for f in frames), truth)
            raw_seconds = time.perf_counter() - start
            missed[kind]["raw"] += miss
            start = time.perf_counter()
            tracker = VideoTracker(lm, args.every, smoothing=False, fps=args.fps)
            frame_ms = ([], [])
            tracked, tracked_faces, miss = run_pipeline(timed(tracker, frames, *frame_ms), truth)
            seconds = time.perf_counter() - start
            missed[kind]["tracking"] += miss
            smoothed, _, _ = run_pipeline(lm.track(frames, args.every, smoothing=default, fps=args.fps), truth)
            start = time.perf_counter()
            flipped, _, _ = run_pipeline(lm.track(frames, args.every, smoothing=False, fps=args.fps, flip=True), truth)
            flip_seconds = time.perf_counter() - start
            unsteady, _, _ = run_pipeline(lm.track(frames, args.every, smoothing=False, fps=args.fps, steady=False), truth)
            for setting in steadiness:  # the default and none are the rows above, not run again
                points = tracked if setting == Steadiness() else unsteady if setting is False else run_pipeline(
                    VideoTracker(lm, args.every, smoothing=False, fps=args.fps, steady=setting).run(frames), truth)[0]
                steadied[kind][setting]["nme"].append(nme_of(points, truth))
                steadied[kind][setting]["nmf"].append(nmf(points, truth))
            if kind == "moving":
                timing["frames"] += tracker.frames
                timing["detector_frames"] += tracker.detector_frames
                timing["seconds"] += seconds
                track_ms += frame_ms[0]
                detect_ms += frame_ms[1]
                timing["raw_seconds"] += raw_seconds
                timing["flip_seconds"] += flip_seconds
            for name, points in (("raw", raw_points), ("tracking", tracked), ("tracking, crops not steadied", unsteady),
                                 ("tracking, flip test on", flipped),
                                 ("tracking + smoothing", smoothed)):
                rows[kind][name]["nme"].append(nme_of(points, truth))
                rows[kind][name]["nmf"].append(nmf(points, truth))
            for s in sweep:
                points = smooth_offline(tracked_faces, s, args.fps)
                swept[kind][s]["nme"].append(nme_of(points, truth))
                swept[kind][s]["nmf"].append(nmf(points, truth))
                if kind == "moving":
                    lag, speed = lag_px(points, tracked, truth)
                    swept[kind][s]["lag"].append(lag)
                    speeds.append(speed)
        print(f"clip {n + 1}/{len(chosen)}", file=sys.stderr)

    mean = lambda v: float(np.mean(v)) * 100  # noqa: E731
    command = shlex.join(["python", "-m", "bench.bench_video", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Video: accuracy and flicker", "", f"`{command}`", "",
             f"Model `{lm.name}`, detector `{lm.detector.name}`; {len(chosen)} validation photos of 300w-lite, each "
             f"made into a still and a moving clip of {args.frames} frames at 640x480 (one face about 170 px, sensor "
             f"noise and JPEG 80 per frame; moving: mean true speed {np.mean(speeds):.1f} px/frame). Tracking runs the "
             f"detector every {args.every} frames. NME and NMF (normalised mean flicker, LDEQ) in % of the inter-ocular "
             f"distance; {machine()}, ONNX Runtime {args.threads} thread(s).", "",
             "| pipeline | still NME % | still NMF % | moving NME % | moving NMF % |", "|---|---:|---:|---:|---:|"]
    for name in rows["still"]:
        s, m = rows["still"][name], rows["moving"][name]
        lines.append(f"| {name} | {mean(s['nme']):.2f} | {mean(s['nmf']):.3f} | {mean(m['nme']):.2f} | {mean(m['nmf']):.3f} |")
    raw_still, smooth_still = mean(rows["still"]["raw"]["nmf"]), mean(rows["still"]["tracking + smoothing"]["nmf"])
    raw_moving, smooth_moving = mean(rows["moving"]["raw"]["nme"]), mean(rows["moving"]["tracking + smoothing"]["nme"])
    fps = timing["frames"] / timing["seconds"]
    share = timing["detector_frames"] / timing["frames"]
    mix_ms = (1 - share) * np.median(track_ms) + share * np.median(detect_ms)
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"- Still clips: tracking + smoothing changes NMF by {(smooth_still / raw_still - 1) * 100:+.0f} % "
              "against raw per-frame detection (target: -50 % or better).",
              f"- Moving clips: tracking + smoothing changes NME by {(smooth_moving / raw_moving - 1) * 100:+.1f} % "
              "(target: +5 % at most).",
              f"- Frames where the face was not found (previous points kept): raw {missed['still']['raw']} still, "
              f"{missed['moving']['raw']} moving; tracking {missed['still']['tracking']} still, "
              f"{missed['moving']['tracking']} moving.",
              f"- Time per frame, moving clips: `Landmarker.track` takes **{timing['seconds'] / timing['raw_seconds']:.2f}x** "
              f"the time of `Landmarker.detect` on every frame (whose flip test is {'on' if lm.flip_test else 'off'}, the "
              f"model's own; tracking: one crop per face), **{timing['flip_seconds'] / timing['raw_seconds']:.2f}x** with "
              "`flip=True` (the crop and its mirror); "
              "the pipelines taking turns clip by clip (target: 0.5x at most).",
              f"- Speed, moving clips (one face, 640x480, decoding excluded): tracking **{fps:.0f} frames/s** "
              f"({timing['detector_frames']} detector frames of {timing['frames']}, "
              f"{share * 100:.0f} %); raw per-frame detection {timing['frames'] / timing['raw_seconds']:.0f} "
              f"frames/s (wall time, load average {load:.1f} on {os.cpu_count()} cores during the run). Median per "
              f"frame: {np.median(track_ms):.1f} ms for a tracked frame, {np.median(detect_ms):.1f} ms for a detector "
              f"frame; at the measured mix, **{1000 / mix_ms:.0f} frames/s**.", "",
              "## One-Euro settings (tracked points re-smoothed offline)", "",
              "Lag: how far the smoothed points trail the raw tracked points along the true motion, moving clips; "
              "ramp lag: behind a noise-free 200 px face moving 2 px per frame at 30 fps.", "",
              "| min_cutoff Hz | beta | still NMF % | moving NME % | moving NMF % | lag px | ramp lag px |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    def cells(still: dict, moving: dict) -> str:
        return f"{mean(still['nmf']):.3f} | {mean(moving['nme']):.2f} | {mean(moving['nmf']):.3f}"

    for s in sweep:
        st, mv = swept["still"][s], swept["moving"][s]
        mark = " (default)" if s == default else ""
        lines.append(f"| {s.min_cutoff}{mark} | {s.beta} | {cells(st, mv)} | {np.mean(mv['lag']):.2f} | {ramp_lag(s):.2f} |")
    lines += ["", "## Steady crops (tracking)", "",
              "Where each tracked frame's crop goes (`facemark.placement.Steadiness`): a One-Euro filter on the "
              "placement its previous points give, a step ahead by the filtered speed, or (none) exactly there.", "",
              "| min_cutoff Hz | beta | step ahead | still NME % | still NMF % | moving NME % | moving NMF % |",
              "|---:|---:|---|---:|---:|---:|---:|"]
    for setting in steadiness:
        st, mv = steadied["still"][setting], steadied["moving"][setting]
        if setting:
            mark = " (default)" if setting == Steadiness() else ""
            head = f"| {setting.min_cutoff}{mark} | {setting.beta} | {'yes' if setting.ahead else 'no'}"
        else:
            head = "| none | | "
        lines.append(f"{head} | {mean(st['nme']):.2f} | {cells(st, mv)} |")
    lines.append("")
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

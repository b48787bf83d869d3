"""``facemark bulk``: landmarks for folders (or buckets) of millions of photos, as Parquet.

Two engines write the same rows (:func:`bulk`):

* ``local`` (the default, no Ray needed; :mod:`facemark.bulk.local`): one process, ``workers``
  model copies in threads while other threads read and decode the next batches.
* ``ray`` (:mod:`facemark.bulk.ray_engine`): Ray Data actors read, decode and detect; the driver
  writes the parts. :func:`landmark_dataset` is that step on its own, for pipelines of your own.

Both go through the same functions (:mod:`facemark.bulk.rows`): a file -> bytes -> facemark's
loader -> :meth:`Landmarker.detect_batch` -> one row per image with its faces
(:meth:`Face.to_row`) -> one row per face, so a photo gets the same rows on a laptop and on a
cluster. Inputs (files, folders, globs, URIs) are expanded by :mod:`facemark.inputs`, as for
``predict`` and ``annotate``; folder entries that are no regular file (symlink loops, dangling
links, FIFOs, devices) are skipped and listed.

**Output** (:mod:`facemark.bulk.output`): ``out/part-*.parquet``, one row per face with the
columns of :data:`COLUMNS` (an image with no face gets one row whose ``face`` is null; an
unreadable, truncated or too large image gets one row with its ``error``, and never stops the
run). ``out/_facemark_bulk.json`` records the model, detector and quality floor, so one folder
never mixes the results of two settings.

**Resuming**: parts are renamed into place when complete and hold whole images only; they are
committed every 1,000 images, every 30 s and when the run stops (Ctrl-C, a failed write). A new
run reads the ``path`` column of the parts, skips those images and adds the rest, and no ``(path,
face)`` row is ever written twice. A lock file keeps two runs off one folder. Ray and pyarrow are
optional (``pip install "facemark[ray]"``) and imported only when used.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from facemark.api import MIN_QUALITY, Landmarker, check_min_quality
from facemark.bulk.local import run_local
from facemark.bulk.output import (
    LOCK_FILE,
    PART_IMAGES,
    PART_SECONDS,
    SETTINGS_FILE,
    PartWriter,
    WriteError,
    check_settings,
    done_paths,
    lock,
    part_files,
    settings,
)
from facemark.bulk.ray_engine import BATCH_SIZE, landmark_dataset, ray_module, run_ray
from facemark.bulk.rows import COLUMNS, explode, image_table, make_landmarker, pyarrow, schema, whole
from facemark.files import remove_stale_temporaries
from facemark.images import MAX_PIXELS, default_max_bytes
from facemark.inputs import expand_inputs

__all__ = ["COLUMNS", "LOCK_FILE", "SETTINGS_FILE", "Interrupted", "WriteError", "bulk", "done_paths", "explode",
           "image_table", "landmark_dataset", "part_files", "schema"]

LOCAL_WORKERS = 8  # the local engine's most model threads by default
ENGINES = ("local", "ray")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the finished images were committed: the message says what was kept."""


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _slope(n: float, st: float, sy: float, stt: float, sty: float) -> float | None:
    """The least-squares slope of images done over time, from the sums of the arrivals: the rate once
    started (unlike first-to-last, it is not inflated by blocks that finish together on parallel actors)."""
    spread = n * stt - st * st
    return (n * sty - st * sy) / spread if n > 2 and spread > 1e-12 else None


def bulk(inputs: Iterable[str | os.PathLike], out: str | os.PathLike, engine: str = "local",
         address: str | None = None, workers: int | None = None, batch_size: int = BATCH_SIZE,
         min_quality: float | None = MIN_QUALITY, model: str | os.PathLike = "default", detector: str | None = None,
         progress: bool = True, part_images: int = PART_IMAGES, part_seconds: float = PART_SECONDS,
         max_listed_errors: int = 20, max_pixels: int | None = None, max_bytes: int | None = None) -> dict:
    """Landmarks of every image of ``inputs`` into Parquet part files in ``out``; see the module.

    ``engine``: ``"local"`` or ``"ray"`` (``address``: a running cluster to join; without it a local
    Ray instance is started, or the one this process already runs is used). ``workers``: model
    copies at once, each with ``CPUs // workers`` ONNX Runtime threads: threads on the local engine
    (default one per CPU, at most :data:`LOCAL_WORKERS`), actors on Ray (default one per CPU).
    ``batch_size``: images per detect call. ``min_quality``: :class:`Landmarker`'s floor (None or
    0 keeps every face). A part is committed every ``part_images`` images or ``part_seconds``
    seconds and when the run stops. ``max_pixels``: the pixel cap (default
    :data:`facemark.images.MAX_PIXELS`; ``facemark --max-mpx``), sent to the Ray actors too;
    ``max_bytes``: files larger than this are refused from their size, never read (default
    :func:`facemark.images.default_max_bytes` of ``max_pixels``; ``facemark --max-mb``).

    Returns the summary: ``images`` (this run), ``faces``, ``errors`` (images with an error),
    ``skipped`` (inputs that are no regular file: ``[{"path", "reason"}]``), ``already_done``,
    ``seconds``, ``images_per_s``, ``startup_s`` and ``startup_images`` (when the first rows came
    back, and how many images they held), ``steady_images_per_s`` (images/s once started: the slope
    of a line fit to the rows' arrivals), ``parts`` (written this run), ``out``. The first
    ``max_listed_errors`` error rows and skipped inputs are listed on stderr. Raises
    :class:`Interrupted` on Ctrl-C and :class:`WriteError` when a part cannot be written (a full
    disk), in both cases after keeping what was finished.
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address and engine != "ray":
        raise ValueError("--address joins a Ray cluster: it needs --engine ray")
    if detector == "given":
        raise ValueError("--detector given takes boxes from a --boxes file, which bulk does not have: choose a "
                         "detector (blazeface by default), or run facemark predict --boxes")
    workers = whole(workers, "workers")
    batch_size = whole(batch_size, "batch_size", allow_none=False)
    part_images = whole(part_images, "part_images", allow_none=False)
    min_quality = check_min_quality(min_quality)
    max_pixels = int(MAX_PIXELS if max_pixels is None else max_pixels)
    max_bytes = default_max_bytes(max_pixels) if max_bytes is None else int(max_bytes)
    pyarrow()
    if engine == "ray":
        ray_module()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out names a file; give a folder for the Parquet files")
    paths, skipped = expand_inputs(inputs, exclude=out)
    if not paths and not skipped:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    # local: one model copy per CPU with one thread each (faster than one copy with every thread: the
    # Python parts run side by side too), at most LOCAL_WORKERS (past that the GIL binds: use ray)
    workers_here = workers or min(_cpus(), LOCAL_WORKERS)
    threads = max(1, _cpus() // workers_here) if engine == "local" else 1

    def make() -> Landmarker:
        return make_landmarker(model, detector, min_quality, threads)

    first = make()  # the model and detector load (and fail) before any image
    wanted = settings(first, detector)
    out.mkdir(parents=True, exist_ok=True)
    held = lock(out)
    listed = [0]
    try:
        remove_stale_temporaries(out)  # parts a killed run left half-written
        check_settings(out, wanted)
        done = done_paths(out)
        todo = [path for path in paths if path not in done]
        writer = PartWriter(out, part_images, part_seconds)
        bar = tqdm(total=len(todo), unit="img", desc="bulk", disable=not progress or not todo, smoothing=0.1)

        def say(text: str) -> None:
            bar.write(text, file=sys.stderr)

        def list_one(kind: str, path: str, why: str) -> None:
            listed[0] += 1
            if listed[0] <= max_listed_errors:
                say(f"{kind} {path}: {why}")

        if len(todo) < len(paths):
            say(f"{len(paths) - len(todo)} of {len(paths)} images are already in {out}: skipped")
        for item in skipped:
            list_one("skipped", item["path"], item["reason"])
        first_rows, fit = [], [0.0] * 5  # the first rows' (seconds, images); sums of a line fit to every arrival

        def report(table) -> None:
            t, y = time.perf_counter() - start, writer.images + table.num_rows
            first_rows[:] = first_rows or [t, y]
            for i, v in enumerate((1.0, t, y, t * t, t * y)):
                fit[i] += v
            before = len(writer.errors)
            writer.add(table)
            for path, error in writer.errors[before:]:
                list_one("error", path, error)
            bar.update(table.num_rows)

        info = {"workers": workers_here, "threads": threads}
        try:
            if todo and engine == "local":
                run_local(todo, report, first, make, workers_here, batch_size, max_pixels, max_bytes)
            elif todo:
                del first
                info = run_ray(todo, report, model, detector, min_quality, address, workers, batch_size,
                               max_pixels, max_bytes)
            writer.flush()
        except WriteError:
            raise  # the disk is full: what was committed stays, the pending rows cannot be written
        except KeyboardInterrupt:
            writer.flush()  # whole images only: what finished before Ctrl-C is kept
            raise Interrupted(f"interrupted: {writer.written_images} images of this run are in {out} "
                              f"({len(writer.parts)} parts); run the same command again to go on") from None
        except BaseException:
            try:
                writer.flush()
            except WriteError:
                pass
            raise
        finally:
            bar.close()
    finally:
        if held is not None:
            held.close()
    if listed[0] > max_listed_errors:
        print(f"... and {listed[0] - max_listed_errors} more images with errors or skipped (the error column)",
              file=sys.stderr)
    seconds = time.perf_counter() - start
    return {"images": writer.images, "faces": writer.faces, "errors": len(writer.errors), "skipped": skipped,
            "already_done": len(paths) - len(todo), "seconds": seconds,
            "startup_s": first_rows[0] if first_rows else seconds,
            "startup_images": first_rows[1] if first_rows else 0,
            "steady_images_per_s": _slope(*fit),
            "images_per_s": writer.images / seconds if seconds > 0 else 0.0, "parts": [str(p) for p in writer.parts],
            "out": str(out), "engine": engine, **info}

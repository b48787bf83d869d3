"""``facemark bulk --engine ray``: `Ray Data <https://docs.ray.io/en/latest/data/>`_.

The driver makes a dataset of paths; ``workers`` actors (``map_batches`` with a class) each build
one :class:`~facemark.api.Landmarker` when they start, read each file's bytes themselves (local
paths, or any URI pyarrow's filesystems read, :data:`READ_THREADS` at a time), decode them with
facemark's loader (:func:`facemark.bulk.rows.load`) and detect: only paths go to the actors and
only rows come back, never decoded arrays. The driver writes the Parquet parts. Without
``address`` a local Ray instance is started and shut down at the end; with one, the run joins
that cluster. A successful run prints nothing of Ray's (:func:`quiet_ray`).

:func:`landmark_dataset` is the Ray Data step on its own, for pipelines of your own.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

import facemark
from facemark.api import MIN_QUALITY, check_min_quality
from facemark.bulk import rows
from facemark.images import MAX_PIXELS
from facemark.inputs import is_uri
from facemark.spec import SHIPPED_MODELS

READ_THREADS = 16  # URIs an actor fetches at once
BATCH_SIZE = 8
BLOCK_BATCHES = 8  # batches in a block of paths at most (64 images at batch size 8)


def ray_module():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(f"the ray engine needs Ray Data, which is not installed: {rows.EXTRA}") from None
    return ray


class LandmarkActor:
    """The Ray Data step: one Landmarker per actor, built when the actor starts, for every batch it gets."""

    def __init__(self, model: str, detector: str | None, min_quality: float | None, threads: int,
                 max_pixels: int, explode_rows: bool, cwd: str | None = None, max_bytes: int | None = None):
        cv2.setNumThreads(threads)
        self.landmarker = rows.make_landmarker(model, detector, min_quality, threads)
        # the driver's caps (facemark --max-mpx, --max-mb), sent as arguments: nothing global to set on a node
        self.explode_rows, self.cwd, self.max_pixels, self.max_bytes = explode_rows, cwd, int(max_pixels), max_bytes
        self.readers = None

    def _load(self, paths: list[str], data) -> list:
        def one(i: int):
            return rows.load(paths[i], None if data is None else data[i], self.cwd, self.max_pixels, self.max_bytes)

        if data is None and any(is_uri(path) for path in paths):  # an object store answers in tens of ms
            if self.readers is None:
                self.readers = ThreadPoolExecutor(READ_THREADS, "facemark-read")
            return list(self.readers.map(one, range(len(paths))))
        return [one(i) for i in range(len(paths))]

    def __call__(self, batch: dict):
        if "path" not in batch:
            raise ValueError("landmark_dataset: the dataset has no 'path' column (read it with include_paths=True)")
        paths = [str(p) for p in batch["path"]]
        read_errors = batch.get("error")
        if "image" in batch:  # ray.data.read_images: decoded RGB (grey: 2-D, RGBA: 4 channels)
            images, errors = [], []
            for image in batch["image"]:
                image = np.asarray(image)
                code = {2: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}.get(
                    image.shape[2] if image.ndim == 3 else image.ndim)
                ok = code is not None and image.dtype == np.uint8 and image.size > 0
                images.append(cv2.cvtColor(np.ascontiguousarray(image), code) if ok else None)
                errors.append(None if ok else f"not an 8-bit grey, RGB or RGBA image (shape {image.shape}, "
                                              f"{image.dtype})")
        else:  # bytes (ray.data.read_binary_files), else the file at path, read here
            loaded = self._load(paths, batch["bytes"] if "bytes" in batch else None)
            images, errors = [image for image, _ in loaded], [error for _, error in loaded]
        if read_errors is not None:
            errors = [read_errors[i] if read_errors[i] is not None else error for i, error in enumerate(errors)]
        table = rows.image_table(self.landmarker, paths, images, errors)
        return rows.explode(table) if self.explode_rows else table


def _actor_step(ds, model, detector, min_quality, workers: int, threads: int, batch_size: int, explode_rows: bool,
                cwd: str | None = None, max_pixels: int | None = None, max_bytes: int | None = None,
                restart: bool = True):
    ray = ray_module()
    model = str(model)
    if model not in SHIPPED_MODELS:  # a file: by absolute path, for actors in other folders
        model = str(Path(model).resolve())
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    kwargs = {"model": model, "detector": detector, "min_quality": min_quality, "threads": threads,
              "max_pixels": int(max_pixels), "explode_rows": explode_rows, "cwd": cwd, "max_bytes": max_bytes}
    # restart=False: a dead actor ends the run (resumable) instead of being recreated; Ray then has no
    # reason to print its error-level line about actors whose constructor arguments live in the object store
    # (as a remote argument, which Ray 2.60 marks deprecated without a named replacement yet)
    extra = {} if restart else {"max_restarts": 0}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        return ds.map_batches(LandmarkActor, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                              batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                              num_cpus=threads, **extra)


def landmark_dataset(ds, model: str | os.PathLike = "default", detector: str | None = None,
                     min_quality: float | None = MIN_QUALITY, workers: int | None = None, threads: int = 1,
                     batch_size: int = BATCH_SIZE, max_pixels: int | None = None):
    """A Ray Dataset of images -> a Ray Dataset of face rows (:data:`~facemark.bulk.rows.COLUMNS`).

    ``ds`` needs a ``path`` column and one of: ``bytes`` (``ray.data.read_binary_files(paths,
    include_paths=True)``: decoded by facemark's loader, EXIF orientation applied, a bad file
    becomes an ``error`` row), ``image`` (``ray.data.read_images(paths, include_paths=True)``:
    Ray's RGB arrays, turned to BGR; Ray does not apply EXIF orientation, and fails on a bad file
    itself), or neither (each actor reads the file at ``path``: absolute paths or URIs). An
    ``error`` column, when there is one, makes its non-null rows error rows.

    ``workers`` actors (``map_batches`` with a class, an actor pool of that size) each build one
    Landmarker when they start, with ``threads`` ONNX Runtime threads for the model and for the
    detector, and ask Ray for ``threads`` CPUs. Default: one actor per ``threads`` CPUs of the
    cluster, less one CPU left for Ray's own tasks (a pool that holds every CPU starves them).
    The model (``"default"`` or a file at the same path on every node) and detector are named,
    not sent: every node needs ``pip install "facemark[ray]"``. ``max_pixels``: the pixel cap
    (default :data:`facemark.images.MAX_PIXELS`), sent to every actor.
    """
    ray = ray_module()
    threads = rows.whole(threads, "threads", allow_none=False)
    batch_size = rows.whole(batch_size, "batch_size", allow_none=False)
    min_quality = check_min_quality(min_quality)
    workers = rows.whole(workers, "workers")
    if workers is None:
        if not ray.is_initialized():  # as Ray Data itself would, on first use
            ray.init()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, (cpus - 1) // threads)
    return _actor_step(ds, model, detector, min_quality, workers, threads, batch_size, explode_rows=True,
                       max_pixels=max_pixels)


def one_line(err: BaseException) -> str:
    """The last line of an error's text (Ray puts the remote traceback first and the error last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def quiet_ray(ray) -> None:
    """Ray Data's execution logs, progress bars and stats summary off in this process (the run
    shows facemark's own progress bar); Ray's own loggers to errors only."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.verbose_stats_logs = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def start_ray(ray, address: str | None) -> None:
    """Join the cluster at ``address``, or start a local instance (its workers import this facemark);
    quietly: Ray's logs to errors only, workers' output not copied to this terminal."""
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
            return
        package_root = str(Path(facemark.__file__).resolve().parents[1])
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, before) if p)
        try:
            # "local": a new instance, not one `ray start` runs
            ray.init(address="local", include_dashboard=False, **quiet)
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = before
    except Exception as err:  # ConnectionError, a version mismatch, ...
        where = f"the Ray cluster at --address {address}" if address else "a local Ray instance"
        hint = ("; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its "
                "token here (see docs/bulk.md)" if address and "RAY_AUTH_MODE" not in os.environ else "")
        raise RuntimeError(f"cannot start or join {where}: {one_line(err)}{hint}") from None


def layout(ray, workers: int | None) -> tuple[int, int, int]:
    """``(workers, threads, cluster CPUs)``: one single-thread actor per CPU by default, else
    ``workers`` actors of ``CPUs // workers`` threads (at most a node's CPUs); ValueError when they do not fit."""
    nodes = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    cpus = sum(nodes)
    if cpus < 1:
        raise ValueError("the Ray cluster has no CPUs")
    if workers is None:
        return cpus, 1, cpus
    threads = max(1, min(cpus // workers, max(nodes)))
    if sum(n // threads for n in nodes) < workers:
        raise ValueError(f"--workers {workers}: the Ray cluster has {cpus} CPUs ({', '.join(map(str, nodes))} a "
                         f"node), room for {sum(n // threads for n in nodes)} actors of {threads} CPUs")
    return workers, threads, cpus


def run_ray(todo: list[str], report: Callable, model, detector, min_quality, address, workers: int | None,
            batch_size: int, max_pixels: int, max_bytes: int | None) -> dict:
    """The images of ``todo`` through Ray Data; each block's image rows go to ``report`` as they come."""
    ray = ray_module()
    started = not ray.is_initialized()
    try:
        if started:  # (a session of the caller's own keeps its settings)
            start_ray(ray, address)
            quiet_ray(ray)
        workers, threads, cpus = layout(ray, workers)
        # blocks of paths: a few per actor, so every actor gets work, and at most BLOCK_BATCHES batches, so
        # rows come back steadily (progress, commits by time); no more actors than blocks
        block = max(batch_size, min(BLOCK_BATCHES * batch_size, -(-len(todo) // (4 * workers))))
        blocks = -(-len(todo) // block)
        workers = min(workers, blocks)
        # (from_items builds the blocks here; from_arrow would start a task per block to read their schema)
        ds = ray.data.from_items([{"path": path} for path in todo], override_num_blocks=blocks)
        # on a cluster (address) actors lost with their node are recreated; on this machine's own instance
        # there is no node to lose, and a run that stops is resumed by running it again
        ds = _actor_step(ds, model, detector, min_quality, workers, threads, batch_size, explode_rows=False,
                         cwd=os.getcwd(), max_pixels=max_pixels, max_bytes=max_bytes, restart=bool(address))
        tables = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        while True:
            try:
                with warnings.catch_warnings():  # Ray Data's own (deprecations, pool sizing): not the user's
                    warnings.simplefilter("ignore")
                    table = next(tables, None)
            except Exception as err:  # an actor that cannot start, a lost node past Ray's retries, ...
                raise RuntimeError(f"the Ray job stopped: {one_line(err)} (the parts written so far are kept: run "
                                   "the same command again to go on)") from err
            if table is None:
                break
            report(table)  # outside the try: a write error is the writer's, not Ray's
        return {"workers": workers, "threads": threads, "cpus": cpus}
    finally:
        if started:  # also after Ctrl-C during ray.init: the processes it started go with it
            ray.shutdown()

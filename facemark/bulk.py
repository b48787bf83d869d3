"""``facemark bulk``: landmarks for folders (or buckets) of millions of photos, as Parquet.

Two engines write the same rows (:func:`bulk`):

* ``local`` (the default, no Ray needed): one process. ``workers`` model copies run in threads
  (ONNX Runtime releases the GIL) while other threads read and decode the next batches; a
  progress bar shows images/s and the time left.
* ``ray``: `Ray Data <https://docs.ray.io/en/latest/data/>`_. Read tasks fetch the files' bytes
  (local paths, or any URI pyarrow's filesystems read: ``s3://``, ``gs://``, ...), ``workers``
  actors (``map_batches`` with a class) each build one :class:`~facemark.api.Landmarker`, decode
  the bytes with facemark's image loader (:func:`facemark.files.decode_image`) and detect; the
  driver writes the Parquet parts. Without ``address`` a local Ray instance is started and shut
  down at the end; with one, the run joins that cluster.

Both engines go through the same functions: bytes -> :func:`~facemark.files.decode_image` ->
:meth:`Landmarker.detect_batch` -> one row per image with its faces -> one row per face
(:func:`explode`), so a photo gets the same rows on a laptop and on a cluster.

**Output**: ``out/part-*.parquet``, one row per face with the columns of :data:`COLUMNS` (an image
with no face gets one row whose ``face`` is null; an unreadable or truncated image gets one row
with its ``error``, and never stops the run). ``out/_facemark_bulk.json`` records the model,
detector and quality floor, so one folder never mixes the results of two settings.

**Resuming**: a part file is written under a hidden temporary name and renamed when complete
(:func:`facemark.files.atomic_path`), and all rows of an image go into one part, so the parts
hold whole images only. A new run reads the ``path`` column of the parts, skips those images and
adds the rest: after a crash or ``kill -9`` only the images of the unfinished part are done again,
and no ``(path, face)`` row is ever written twice. A lock file keeps two runs off one folder.

:func:`landmark_dataset` is the Ray Data step on its own, for pipelines of your own. Ray and
pyarrow are optional (``pip install "facemark[ray]"``) and imported only when used.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import cv2
import numpy as np
from tqdm import tqdm

try:
    import fcntl  # POSIX file locks
except ImportError:  # Windows
    fcntl = None

import facemark
import facemark.files
from facemark.api import MIN_QUALITY, Landmarker, check_min_quality
from facemark.detectors import DEFAULT_DETECTOR, get_detector
from facemark.spec import SHIPPED_MODELS
from facemark.files import (
    IMAGE_SUFFIXES, ImageError, atomic_path, decode_image, remove_stale_temporaries, write_atomic,
)
from facemark.predict import input_files

EXTRA = 'pip install "facemark[ray]"'
#: the Parquet columns, one row per face (an image without a face or with an error: one row, ``face`` null)
COLUMNS = ("path", "face", "box", "score", "points", "point_scores", "quality", "width", "height", "error")
_IMAGE_COLUMNS = ("path", "width", "height", "error")  # the same for every face of an image
SETTINGS_FILE = "_facemark_bulk.json"  # leading "_" (and "." for temporaries): Parquet readers skip them
LOCK_FILE = "_facemark_bulk.lock"
PART_IMAGES = 1000  # images per part file: what a crash can cost at most
BATCH_SIZE = 8
LOCAL_WORKERS = 8  # the local engine's most model threads by default
READ_THREADS = 16  # URIs a ray read task fetches at once
ENGINES = ("local", "ray")
_GLOB = re.compile(r"[*?\[]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


# --------------------------------------------------------------------------- optional imports


def _pyarrow():
    """``(pyarrow, pyarrow.parquet, pyarrow.compute)``; ImportError naming the extra when missing."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"facemark bulk writes Parquet with pyarrow, which is not installed: {EXTRA}") from None
    return pa, pq, pc


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(f"the ray engine needs Ray Data, which is not installed: {EXTRA}") from None
    return ray


@lru_cache(maxsize=1)
def schema():
    """The pyarrow schema of the face rows (:data:`COLUMNS`); every float is float32."""
    pa = _pyarrow()[0]
    types = {"path": pa.string(), **_face_types(), "width": pa.int32(), "height": pa.int32(), "error": pa.string()}
    return pa.schema([(name, types[name]) for name in COLUMNS])


def _face_types() -> dict:
    pa = _pyarrow()[0]
    return {"face": pa.int32(), "box": pa.list_(pa.float32(), 4), "score": pa.float32(),
            "points": pa.list_(pa.list_(pa.float32(), 2)), "point_scores": pa.list_(pa.float32()),
            "quality": pa.float32()}


@lru_cache(maxsize=1)
def _image_schema():
    """One row per image: its columns and its faces as a list of structs (an image's rows stay together)."""
    pa = _pyarrow()[0]
    face = pa.struct(list(_face_types().items()))
    return pa.schema([("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
                      ("faces", pa.list_(face))])


# --------------------------------------------------------------------------- argument checks


def _whole(value, name: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- inputs


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``s3://bucket/x``, ``file:///x``) rather than a local path."""
    return bool(_URI.match(str(path)))


def expand_inputs(inputs: Iterable[str | os.PathLike], exclude: Path | None = None) -> list[str]:
    """The image files of ``inputs`` as strings, each once, in order: files (any suffix), folders
    searched recursively for image files (predict's :func:`~facemark.predict.input_files`), globs
    (``"photos/**/*.jpg"``, expanded here so a shell's argument limit does not matter) and URIs
    (a file, or a folder listed recursively through pyarrow's filesystems). ValueError naming the
    input when one does not exist or a glob matches nothing: checked before any work."""
    paths, seen = [], set()
    for raw in inputs:
        text = os.fspath(raw)
        if is_uri(text):
            found = _expand_uri(text)
        else:
            if _GLOB.search(text) and not os.path.exists(text):
                matches = sorted(glob.glob(text, recursive=True))
                if not matches:
                    raise ValueError(f"{text}: no file or folder matches")
            else:
                matches = [text]
            files, skipped = input_files(matches, IMAGE_SUFFIXES, exclude)
            if skipped:
                raise ValueError(f"{skipped[0]['path']}: {skipped[0]['reason']}")
            found = [str(path) for path, _ in files]
        for path in found:
            key = path if is_uri(path) else os.path.normcase(os.path.abspath(path))  # one file named twice: once
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths


@lru_cache(maxsize=64)
def _filesystem(root: str):
    """``(pyarrow filesystem, its path for root)`` for ``scheme://netloc``: built once per bucket."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root + "/")


def _split_uri(uri: str):
    """``(filesystem, path inside it)`` for a URI (pyarrow's own ``from_uri`` split, cached per bucket)."""
    parts = urlsplit(uri)
    filesystem, base = _filesystem(f"{parts.scheme}://{parts.netloc}")
    return filesystem, base.rstrip("/") + parts.path


def _expand_uri(uri: str) -> list[str]:
    import pyarrow
    from pyarrow import fs

    try:
        filesystem, path = _split_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return [uri]
        if info.type != fs.FileType.Directory:
            raise ValueError(f"{uri}: no such file or folder")
        base, prefix = path.rstrip("/"), uri.rstrip("/")
        found = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except (OSError, pyarrow.ArrowException) as err:
        raise ValueError(f"{uri}: cannot be listed ({' '.join(str(err).split())})") from None
    suffixes = set(IMAGE_SUFFIXES)
    return sorted(prefix + i.path[len(base):] for i in found
                  if i.type == fs.FileType.File and os.path.splitext(i.path)[1].lower() in suffixes)


def read_bytes(path: str, cwd: str | None = None) -> bytes:
    """The bytes of a local file (relative to ``cwd`` when given) or of a URI."""
    if is_uri(path):
        filesystem, inner = _split_uri(path)
        with filesystem.open_input_stream(inner) as f:
            return f.read()
    with open(os.path.join(cwd, path) if cwd else path, "rb") as f:
        return f.read()


def _reason(err: BaseException) -> str:
    """An exception as the one-line ``error`` of its image's row (the path is in the row already)."""
    if isinstance(err, ImageError):
        text = err.reason
    elif isinstance(err, OSError) and err.strerror:
        text = f"cannot read ({err.strerror})"
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())


def load(path: str, data: bytes | None = None, cwd: str | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(BGR image, None)`` or ``(None, one-line reason)``: facemark's guarded loader on the bytes."""
    try:
        if data is None:
            data = read_bytes(path, cwd)
        return decode_image(bytes(data), path), None
    except Exception as err:  # one bad file is one error row, never the end of the run
        return None, _reason(err)


# --------------------------------------------------------------------------- rows


def make_landmarker(model: str | os.PathLike = "default", detector: str | None = None,
                    min_quality: float | None = MIN_QUALITY, threads: int | None = None) -> Landmarker:
    """A Landmarker whose model and detector each use ``threads`` ONNX Runtime threads."""
    chosen = detector or DEFAULT_DETECTOR
    if threads:
        try:  # the detector's own session (BlazeFace, MTCNN); others (dlib, haar) keep their default
            chosen = get_detector(chosen, threads=threads)
        except TypeError:
            pass
    landmarker = Landmarker(model, detector=chosen, min_quality=min_quality, num_threads=threads)
    landmarker.detector  # noqa: B018 - built now: a missing optional dependency fails before any image
    return landmarker


def _face_dict(index: int, face) -> dict:
    return {"face": index, "box": [float(v) for v in face.box], "score": float(face.score),
            "points": np.asarray(face.points, np.float32).tolist(),
            "point_scores": None if face.point_scores is None else np.asarray(face.point_scores, np.float32).tolist(),
            "quality": None if face.quality is None else float(face.quality)}


_NO_FACE = {"face": None, "box": None, "score": None, "points": None, "point_scores": None, "quality": None}


def _detect(landmarker: Landmarker, images: list[np.ndarray]) -> list:
    """:meth:`Landmarker.detect_batch`; when the batch fails, image by image (an error string for a failing one)."""
    try:
        return landmarker.detect_batch(images)
    except Exception:
        found = []
        for image in images:
            try:
                found.append(landmarker.detect(image))
            except Exception as err:
                found.append(_reason(err))
        return found


def image_table(landmarker: Landmarker, paths: Sequence[str], images: Sequence[np.ndarray | None],
                errors: Sequence[str | None]):
    """One row per image (:func:`_image_schema`): detect on the images that have no error yet."""
    pa = _pyarrow()[0]
    todo = [i for i, error in enumerate(errors) if error is None]
    found = dict(zip(todo, _detect(landmarker, [images[i] for i in todo]) if todo else []))
    rows = []
    for i, path in enumerate(paths):
        faces, error = found.get(i), errors[i]
        if isinstance(faces, str):
            faces, error = None, faces
        height, width = images[i].shape[:2] if images[i] is not None else (None, None)
        rows.append({"path": str(path), "width": width, "height": height, "error": error,
                     "faces": [_face_dict(j, face) for j, face in enumerate(faces or [])] or [_NO_FACE]})
    return pa.Table.from_pylist(rows, schema=_image_schema())


def explode(images):
    """Image rows -> face rows (:data:`COLUMNS`): each face a row, the image's columns repeated."""
    pa, _, pc = _pyarrow()
    if images.num_rows == 0:
        return schema().empty_table()
    faces = images.column("faces").combine_chunks()
    parents = pc.list_parent_indices(faces)
    flat = pc.list_flatten(faces)
    columns = [images.column(name).take(parents) if name in _IMAGE_COLUMNS else pc.struct_field(flat, name)
               for name in COLUMNS]
    return pa.Table.from_arrays(columns, schema=schema())


# --------------------------------------------------------------------------- output folder


def _settings(landmarker: Landmarker, detector: str | None) -> dict:
    digest = hashlib.sha256(Path(landmarker.model_path).read_bytes()).hexdigest()[:16]
    return {"model": landmarker.name, "model_sha256": digest, "detector": detector or DEFAULT_DETECTOR,
            "min_quality": landmarker.min_quality, "num_points": landmarker.num_points,
            "columns": list(COLUMNS), "facemark": facemark.__version__}


def _check_settings(out: Path, settings: dict) -> None:
    """Record the settings in a new folder; refuse to add rows of other settings to an old one."""
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not readable ({err}); move it away to start this folder afresh") from None
        for key in ("model_sha256", "detector", "min_quality", "num_points"):
            if old.get(key) != settings[key]:
                raise ValueError(f"{out} holds results made with {key} {old.get(key)!r} (model {old.get('model')}); "
                                 f"this run has {settings[key]!r}: give another --out, or the same settings to resume")
        return
    write_atomic(path, json.dumps(settings, indent=1) + "\n")


def _lock(out: Path):
    """An exclusive lock on ``out`` for this run (released by the OS even after ``kill -9``)."""
    if fcntl is None:  # Windows: no lock
        return None
    handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run: the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ValueError(f"{out}: another facemark bulk run is writing to this folder") from None
    return handle


def part_files(out: str | os.PathLike) -> list[Path]:
    """The complete part files in ``out`` (temporaries are hidden, with a leading '.')."""
    return sorted(Path(out).glob("part-*.parquet"))


def done_paths(out: str | os.PathLike) -> set[str]:
    """The ``path`` of every image already in ``out``'s part files."""
    _, pq, _ = _pyarrow()
    done: set[str] = set()
    for part in part_files(out):
        try:
            done.update(pq.read_table(part, columns=["path"]).column(0).to_pylist())
        except Exception as err:  # cannot happen to a part renamed into place, but say which file it is
            raise ValueError(f"{part}: not a readable part file ({' '.join(str(err).split())}); move it away "
                             "and run again to redo its images") from None
    return done


class _PartWriter:
    """Face rows into ``out/part-<time>-<random>-<n>.parquet``, ``part_images`` images a file, each written
    under a temporary name and renamed when complete."""

    def __init__(self, out: Path, part_images: int):
        self.out, self.part_images = out, part_images
        # unique per run (two runs of one process within a second included): a part is never replaced
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.pending, self.pending_images, self.parts = [], 0, []
        self.images = self.faces = 0
        self.errors: list[tuple[str, str]] = []

    def add(self, images) -> None:
        """Image rows (:func:`image_table`): whole images only, so a part never splits one."""
        if images.num_rows == 0:
            return
        errors = images.column("error")
        for path, error in zip(images.column("path").to_pylist(), errors.to_pylist()):
            if error is not None:
                self.errors.append((path, error))
        rows = explode(images)
        self.images += images.num_rows
        self.faces += rows.num_rows - rows.column("face").null_count
        self.pending.append(rows)
        self.pending_images += images.num_rows
        if self.pending_images >= self.part_images:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pa, pq, _ = _pyarrow()
        path = self.out / f"part-{self.run}-{len(self.parts):05d}.parquet"
        if path.exists():
            raise RuntimeError(f"{path} exists already; not replacing it")
        with atomic_path(path) as tmp:  # hidden ".part-....tmp-<pid>-<thread>.parquet" until complete
            pq.write_table(pa.concat_tables(self.pending), tmp)
        self.parts.append(path)
        self.pending, self.pending_images = [], 0


# --------------------------------------------------------------------------- engines


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_local(todo: list[str], writer: _PartWriter, first: Landmarker, make, workers: int, batch_size: int,
               progress: bool, report) -> None:
    """``workers`` Landmarkers in threads, each batch read and decoded in another thread ahead of it."""
    landmarkers = SimpleQueue()  # idle model copies; the others are built by the threads that need them
    landmarkers.put(first)
    cwd = os.getcwd()

    def decode(paths):
        return [load(path, cwd=cwd) for path in paths]

    def detect(paths, decoded):
        images, errors = zip(*decoded.result())
        try:
            landmarker = landmarkers.get_nowait()
        except Empty:  # at most `workers` threads ask at once, so at most `workers` copies
            landmarker = make()
        try:
            return image_table(landmarker, paths, images, errors)
        finally:
            landmarkers.put(landmarker)

    batches = _batches(todo, batch_size)
    with ThreadPoolExecutor(workers, "facemark-decode") as readers, \
            ThreadPoolExecutor(workers, "facemark-model") as models, \
            tqdm(total=len(todo), unit="img", desc="bulk", disable=not progress, smoothing=0.1) as bar:
        pending: deque = deque()

        def submit() -> None:
            paths = next(batches, None)
            if paths is not None:
                pending.append(models.submit(detect, paths, readers.submit(decode, paths)))

        for _ in range(workers + 1):  # in flight: one batch per model thread and one more, decoded ahead
            submit()
        try:
            while pending:
                table = pending.popleft().result()
                report(writer, table, lambda text: bar.write(text, file=sys.stderr))
                bar.update(table.num_rows)
                submit()
        finally:
            for future in pending:
                future.cancel()


class _LandmarkActor:
    """The Ray Data step: one Landmarker per actor, built when the actor starts, for every batch it gets."""

    def __init__(self, model: str, detector: str | None, min_quality: float | None, threads: int,
                 max_pixels: int, explode_rows: bool, cwd: str | None = None):
        facemark.files.MAX_PIXELS = max_pixels  # the driver's pixel cap (facemark --max-mpx)
        cv2.setNumThreads(threads)
        self.landmarker = make_landmarker(model, detector, min_quality, threads)
        self.explode_rows, self.cwd = explode_rows, cwd

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
        else:  # bytes (ray.data.read_binary_files or the ray engine's reader), else the file at path
            data = batch["bytes"] if "bytes" in batch else [None] * len(paths)
            loaded = [(None, read_errors[i]) if read_errors is not None and read_errors[i] is not None
                      else load(path, data[i], self.cwd) for i, path in enumerate(paths)]
            images, errors = [image for image, _ in loaded], [error for _, error in loaded]
        if read_errors is not None:
            errors = [read_errors[i] if read_errors[i] is not None else error for i, error in enumerate(errors)]
        table = image_table(self.landmarker, paths, images, errors)
        return explode(table) if self.explode_rows else table


def _actor_step(ds, model, detector, min_quality, workers: int, threads: int, batch_size: int, explode_rows: bool,
                cwd: str | None = None):
    ray = _ray()
    model = str(model)
    if model not in SHIPPED_MODELS:  # a file: by absolute path, for actors in other folders
        model = str(Path(model).resolve())
    kwargs = {"model": model, "detector": detector, "min_quality": min_quality, "threads": threads,
              "max_pixels": facemark.files.MAX_PIXELS, "explode_rows": explode_rows, "cwd": cwd}
    return ds.map_batches(_LandmarkActor, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)


def landmark_dataset(ds, model: str | os.PathLike = "default", detector: str | None = None,
                     min_quality: float | None = MIN_QUALITY, workers: int | None = None, threads: int = 1,
                     batch_size: int = BATCH_SIZE):
    """A Ray Dataset of images -> a Ray Dataset of face rows (:data:`COLUMNS`, :func:`schema`).

    ``ds`` needs a ``path`` column and one of: ``bytes`` (``ray.data.read_binary_files(paths,
    include_paths=True)``: decoded by facemark's loader, EXIF orientation applied, a bad file
    becomes an ``error`` row), ``image`` (``ray.data.read_images(paths, include_paths=True)``:
    Ray's RGB arrays, turned to BGR; Ray does not apply EXIF orientation, and fails on a bad file
    itself), or neither (each actor reads the file at ``path``: absolute paths or URIs). An
    ``error`` column, when there is one, makes its non-null rows error rows.

    ``workers`` actors (``map_batches`` with a class, an actor pool of that size) each build one
    Landmarker when they start, with ``threads`` ONNX Runtime threads for the model and for the
    detector, and ask Ray for ``threads`` CPUs. Default: one actor per ``threads`` CPUs of the
    cluster, less one CPU left for the tasks that read (a pool that holds every CPU starves them).
    The model (``"default"`` or a file at the same path on every node) and detector are named,
    not sent: every node needs ``pip install "facemark[ray]"``.
    """
    ray = _ray()
    threads = _whole(threads, "threads", allow_none=False)
    batch_size = _whole(batch_size, "batch_size", allow_none=False)
    min_quality = check_min_quality(min_quality)
    workers = _whole(workers, "workers")
    if workers is None:
        if not ray.is_initialized():  # as Ray Data itself would, on first use
            ray.init()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, (cpus - 1) // threads)
    return _actor_step(ds, model, detector, min_quality, workers, threads, batch_size, explode_rows=True)


def _fetch(path: str, cwd: str) -> tuple[bytes, str | None]:
    try:
        return read_bytes(path, cwd), None
    except Exception as err:  # a file that cannot be read is an error row, not a failed task
        return b"", _reason(err)


def _read_batch(batch, cwd: str):
    """The ray engine's read step: ``path`` -> ``path``, ``bytes``, ``error``. URIs are fetched
    :data:`READ_THREADS` at a time (an object store answers in tens of ms; local files one by one)."""
    pa = _pyarrow()[0]
    paths = batch.column("path").to_pylist()
    if any(is_uri(path) for path in paths):
        with ThreadPoolExecutor(READ_THREADS, "facemark-read") as pool:
            fetched = list(pool.map(_fetch, paths, [cwd] * len(paths)))
    else:
        fetched = [_fetch(path, cwd) for path in paths]
    return pa.table({"path": pa.array(paths, pa.string()),
                     "bytes": pa.array([data for data, _ in fetched], pa.large_binary()),
                     "error": pa.array([error for _, error in fetched], pa.string())})


def _one_line(err: BaseException) -> str:
    """The last line of an error's text (Ray puts the remote traceback first and the error last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _start_ray(ray, address: str | None) -> None:
    try:
        if address:
            ray.init(address=address)
            return
        # a local instance: its workers (started by it, with this environment) import this facemark
        package_root = str(Path(facemark.__file__).resolve().parents[1])
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, before) if p)
        try:
            ray.init(address="local", include_dashboard=False)  # "local": a new instance, not one `ray start` runs
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = before
    except Exception as err:  # ConnectionError, a version mismatch, ...
        where = f"the Ray cluster at --address {address}" if address else "a local Ray instance"
        hint = ("; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its "
                "token here (see docs/bulk.md)" if address and "RAY_AUTH_MODE" not in os.environ else "")
        raise RuntimeError(f"cannot start or join {where}: {_one_line(err)}{hint}") from None


def _ray_layout(ray, workers: int | None) -> tuple[int, int, int]:
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


def _run_ray(todo: list[str], writer: _PartWriter, model, detector, min_quality, address,
             workers: int | None, batch_size: int, report) -> dict:
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        _start_ray(ray, address)
    try:
        workers, threads, cpus = _ray_layout(ray, workers)
        # blocks of paths: a few per actor, so every actor gets work and the read tasks keep ahead
        block = max(batch_size, min(PART_IMAGES, -(-len(todo) // (4 * workers))))
        # (from_items builds the blocks here; from_arrow would start a task per block to read their schema)
        ds = ray.data.from_items([{"path": path} for path in todo], override_num_blocks=-(-len(todo) // block))
        # reading takes no CPU of Ray's (num_cpus=0: the actors hold them all); a few tasks at once, one per
        # four actors, each with a block of paths (a worker process each: more would only cost start-up)
        ds = ds.map_batches(_read_batch, fn_kwargs={"cwd": os.getcwd()}, batch_size=None, batch_format="pyarrow",
                            num_cpus=0, compute=ray.data.TaskPoolStrategy(size=-(-workers // 4)))
        ds = _actor_step(ds, model, detector, min_quality, workers, threads, batch_size, explode_rows=False)
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                report(writer, table, lambda text: print(text, file=sys.stderr))
        except Exception as err:  # an actor that cannot start, a lost node past Ray's retries, ...
            raise RuntimeError(f"the Ray job stopped: {_one_line(err)} (the parts written so far are kept: run "
                               "the same command again to go on)") from err
        return {"workers": workers, "threads": threads, "cpus": cpus}
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- entry point


def bulk(inputs: Iterable[str | os.PathLike], out: str | os.PathLike, engine: str = "local",
         address: str | None = None, workers: int | None = None, batch_size: int = BATCH_SIZE,
         min_quality: float | None = MIN_QUALITY, model: str | os.PathLike = "default", detector: str | None = None,
         progress: bool = True, part_images: int = PART_IMAGES, max_listed_errors: int = 20) -> dict:
    """Landmarks of every image of ``inputs`` into Parquet part files in ``out``; see the module.

    ``engine``: ``"local"`` or ``"ray"`` (``address``: a running cluster to join; without it a local
    Ray instance is started, or the one this process already runs is used). ``workers``: model
    copies at once, each with ``CPUs // workers`` ONNX Runtime threads: threads on the local engine
    (default one per CPU, at most :data:`LOCAL_WORKERS`), actors on Ray (default one per CPU).
    ``batch_size``: images per detect call. ``min_quality``: :class:`Landmarker`'s floor (None or 0 keeps every face). Returns the summary:
    ``images`` (this run), ``faces``, ``errors`` (images with an error), ``already_done`` (skipped),
    ``seconds``, ``images_per_s``, ``parts`` (written this run), ``out``.
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address and engine != "ray":
        raise ValueError("--address joins a Ray cluster: it needs --engine ray")
    workers = _whole(workers, "workers")
    batch_size = _whole(batch_size, "batch_size", allow_none=False)
    part_images = _whole(part_images, "part_images", allow_none=False)
    min_quality = check_min_quality(min_quality)
    _pyarrow()
    if engine == "ray":
        _ray()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out names a file; give a folder for the Parquet files")
    paths = expand_inputs(inputs, exclude=out)
    if not paths:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    # local: one model copy per CPU with one thread each (faster than one copy with every thread: the
    # Python parts run side by side too), at most LOCAL_WORKERS (past that the GIL binds: use ray)
    workers_here = workers or min(_cpus(), LOCAL_WORKERS)
    threads = max(1, _cpus() // workers_here) if engine == "local" else 1

    def make() -> Landmarker:
        return make_landmarker(model, detector, min_quality, threads)

    first = make()  # the model and detector load (and fail) before any image
    settings = _settings(first, detector)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        remove_stale_temporaries(out)  # parts a killed run left half-written
        _check_settings(out, settings)
        done = done_paths(out)
        todo = [path for path in paths if path not in done]
        if len(todo) < len(paths):
            print(f"{len(paths) - len(todo)} of {len(paths)} images are already in {out}: skipped", file=sys.stderr)
        writer = _PartWriter(out, part_images)
        listed = [0]

        def report(w: _PartWriter, table, write) -> None:
            before = len(w.errors)
            w.add(table)
            for path, error in w.errors[before:]:
                listed[0] += 1
                if listed[0] <= max_listed_errors:
                    write(f"error {path}: {error}")

        info = {"workers": workers_here, "threads": threads}
        try:
            if todo and engine == "local":
                _run_local(todo, writer, first, make, workers_here, batch_size, progress, report)
            elif todo:
                del first
                info = _run_ray(todo, writer, model, detector, min_quality, address, workers, batch_size,
                                report)
        finally:
            writer.flush()  # whole images only: what finished before an interruption is kept
    finally:
        if lock is not None:
            lock.close()
    if len(writer.errors) > max_listed_errors:
        print(f"... and {len(writer.errors) - max_listed_errors} more images with errors (the error column)",
              file=sys.stderr)
    seconds = time.perf_counter() - start
    return {"images": writer.images, "faces": writer.faces, "errors": len(writer.errors),
            "already_done": len(paths) - len(todo), "seconds": seconds,
            "images_per_s": writer.images / seconds if seconds > 0 else 0.0, "parts": [str(p) for p in writer.parts],
            "out": str(out), "engine": engine, **info}

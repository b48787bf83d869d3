"""The rows of ``facemark bulk``, the same on every engine: a file -> bytes -> a decoded image ->
:meth:`Landmarker.detect_batch` -> one row per image with its faces (:func:`image_table`) -> one
row per face (:func:`explode`, the Parquet columns :data:`COLUMNS`). A face's columns come from
:meth:`facemark.face.Face.to_row`, its one row form.

An image's faces travel as one row until they are written, so a part file never splits an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from facemark.api import MIN_QUALITY, Landmarker
from facemark.detectors import DEFAULT_DETECTOR, get_detector
from facemark.images import MAX_PIXELS, ImageError, decode_image, default_max_bytes, read_image_bytes
from facemark.inputs import is_uri, read_uri

EXTRA = 'pip install "facemark[ray]"'
#: the Parquet columns, one row per face (an image without a face or with an error: one row, ``face`` null)
COLUMNS = ("path", "face", "box", "score", "points", "point_scores", "quality", "width", "height", "error")
IMAGE_COLUMNS = ("path", "width", "height", "error")  # the same for every face of an image
FACE_COLUMNS = ("face", "box", "score", "points", "point_scores", "quality")  # Face.to_row()
_NO_FACE = dict.fromkeys(FACE_COLUMNS)


def pyarrow():
    """``(pyarrow, pyarrow.parquet, pyarrow.compute)``; ImportError naming the extra when missing."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"facemark bulk writes Parquet with pyarrow, which is not installed: {EXTRA}") from None
    return pa, pq, pc


@lru_cache(maxsize=1)
def schema():
    """The pyarrow schema of the face rows (:data:`COLUMNS`); every float is float32."""
    pa = pyarrow()[0]
    types = {"path": pa.string(), **_face_types(), "width": pa.int32(), "height": pa.int32(), "error": pa.string()}
    return pa.schema([(name, types[name]) for name in COLUMNS])


def _face_types() -> dict:
    pa = pyarrow()[0]
    return {"face": pa.int32(), "box": pa.list_(pa.float32(), 4), "score": pa.float32(),
            "points": pa.list_(pa.list_(pa.float32(), 2)), "point_scores": pa.list_(pa.float32()),
            "quality": pa.float32()}


@lru_cache(maxsize=1)
def image_schema():
    """One row per image: its columns and its faces as a list of structs (an image's rows stay together)."""
    pa = pyarrow()[0]
    face = pa.struct(list(_face_types().items()))
    return pa.schema([("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
                      ("faces", pa.list_(face))])


# --------------------------------------------------------------------------- arguments and reading


def whole(value, name: str, allow_none: bool = True) -> int | None:
    """``value`` as an int >= 1 (None passes when ``allow_none``); ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def read_bytes(path: str, cwd: str | None = None, max_bytes: int | None = None,
               max_pixels: int = MAX_PIXELS) -> bytes:
    """The bytes of a local file (relative to ``cwd`` when given: :func:`facemark.images.read_image_bytes`,
    a regular file within ``max_bytes`` checked from ``stat`` before a byte is read) or of a URI
    (:func:`facemark.inputs.read_uri`, its size checked before it is fetched)."""
    if is_uri(path):
        return read_uri(path, default_max_bytes(max_pixels) if max_bytes is None else max_bytes)
    return read_image_bytes(os.path.join(cwd, path) if cwd else path, max_bytes, max_pixels)


def reason(err: BaseException) -> str:
    """An exception as the one-line ``error`` of its image's row (the path is in the row already)."""
    if isinstance(err, ImageError):
        text = err.reason
    elif isinstance(err, FileNotFoundError):
        text = "cannot read (no such file)"
    elif isinstance(err, OSError) and err.strerror:
        text = f"cannot read ({err.strerror})"
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())


def load(path: str, data: bytes | None = None, cwd: str | None = None, max_pixels: int = MAX_PIXELS,
         max_bytes: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(BGR image, None)`` or ``(None, one-line reason)``: the file's bytes (``data``, or read with
    :func:`read_bytes`) through facemark's loader (:func:`facemark.images.decode_image`: caps,
    truncation checks, EXIF orientation)."""
    try:
        if data is None:
            data = read_bytes(path, cwd, max_bytes, max_pixels)
        return decode_image(bytes(data), path, max_pixels), None
    except Exception as err:  # one bad file is one error row, never the end of the run
        return None, reason(err)


# --------------------------------------------------------------------------- rows


def make_landmarker(model="default", detector: str | None = None, min_quality: float | None = MIN_QUALITY,
                    threads: int | None = None) -> Landmarker:
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
                found.append(reason(err))
        return found


def image_table(landmarker: Landmarker, paths: Sequence[str], images: Sequence[np.ndarray | None],
                errors: Sequence[str | None]):
    """One row per image (:func:`image_schema`): detect on the images that have no error yet."""
    pa = pyarrow()[0]
    todo = [i for i, error in enumerate(errors) if error is None]
    found = dict(zip(todo, _detect(landmarker, [images[i] for i in todo]) if todo else []))
    rows = []
    for i, path in enumerate(paths):
        faces, error = found.get(i), errors[i]
        if isinstance(faces, str):
            faces, error = None, faces
        height, width = images[i].shape[:2] if images[i] is not None else (None, None)
        rows.append({"path": str(path), "width": width, "height": height, "error": error,
                     "faces": [face.to_row(j) for j, face in enumerate(faces or [])] or [_NO_FACE]})
    return pa.Table.from_pylist(rows, schema=image_schema())


def explode(images):
    """Image rows -> face rows (:data:`COLUMNS`): each face a row, the image's columns repeated."""
    pa, _, pc = pyarrow()
    if images.num_rows == 0:
        return schema().empty_table()
    faces = images.column("faces").combine_chunks()
    parents = pc.list_parent_indices(faces)
    flat = pc.list_flatten(faces)
    columns = [images.column(name).take(parents) if name in IMAGE_COLUMNS else pc.struct_field(flat, name)
               for name in COLUMNS]
    return pa.Table.from_arrays(columns, schema=schema())

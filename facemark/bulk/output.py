"""``facemark bulk``'s output folder: Parquet part files, the settings record and the lock.

A part is written under a hidden temporary name and renamed when complete
(:func:`facemark.files.atomic_path`), and holds whole images only, so a new run can read the
``path`` column of the parts (:func:`done_paths`), skip those images and add the rest. Parts are
committed every ``part_images`` images, every ``part_seconds`` seconds and when the run stops
(Ctrl-C, an error), so a stopped run keeps what it finished.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

try:
    import fcntl  # POSIX file locks
except ImportError:  # Windows
    fcntl = None

import facemark
from facemark.bulk.rows import COLUMNS, explode, pyarrow
from facemark.detectors import DEFAULT_DETECTOR
from facemark.files import atomic_path, write_atomic
from facemark.runtime import model_digest

SETTINGS_FILE = "_facemark_bulk.json"  # leading "_" (and "." for temporaries): Parquet readers skip them
LOCK_FILE = "_facemark_bulk.lock"
PART_IMAGES = 1000  # images per part file at most
PART_SECONDS = 30.0  # and a part at least this often: what a kill -9 can cost at most


class WriteError(RuntimeError):
    """A part could not be written (disk full, permissions): one line, naming the folder and what was kept."""


def settings(landmarker, detector: str | None) -> dict:
    """What ``out/_facemark_bulk.json`` records: the rows of one folder come from one model and settings."""
    return {"model": landmarker.name, "model_sha256": model_digest(landmarker.model_path), "detector": detector or DEFAULT_DETECTOR,
            "min_quality": landmarker.min_quality, "num_points": landmarker.num_points,
            "columns": list(COLUMNS), "facemark": facemark.__version__}


def check_settings(out: Path, wanted: dict) -> None:
    """Record the settings in a new folder; refuse to add rows of other settings to an old one."""
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not readable ({err}); move it away to start this folder afresh") from None
        for key in ("model_sha256", "detector", "min_quality", "num_points"):
            if old.get(key) != wanted[key]:
                raise ValueError(f"{out} holds results made with {key} {old.get(key)!r} (model {old.get('model')}); "
                                 f"this run has {wanted[key]!r}: give another --out, or the same settings to resume")
        return
    write_atomic(path, json.dumps(wanted, indent=1) + "\n")


def lock(out: Path):
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
    _, pq, _ = pyarrow()
    done: set[str] = set()
    for part in part_files(out):
        try:
            done.update(pq.read_table(part, columns=["path"]).column(0).to_pylist())
        except Exception as err:  # cannot happen to a part renamed into place, but say which file it is
            raise ValueError(f"{part}: not a readable part file ({' '.join(str(err).split())}); move it away "
                             "and run again to redo its images") from None
    return done


class PartWriter:
    """Face rows into ``out/part-<time>-<random>-<n>.parquet``: a part every ``part_images`` images
    or ``part_seconds`` seconds, whichever comes first, and on :meth:`flush`; each written under a
    temporary name and renamed when complete."""

    def __init__(self, out: Path, part_images: int = PART_IMAGES, part_seconds: float = PART_SECONDS):
        self.out, self.part_images, self.part_seconds = out, part_images, part_seconds
        # unique per run (two runs of one process within a second included): a part is never replaced
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.pending, self.pending_images, self.parts = [], 0, []
        self.images = self.faces = self.written_images = 0
        self.errors: list[tuple[str, str]] = []
        self.since = time.monotonic()

    def add(self, images) -> None:
        """Image rows (:func:`~facemark.bulk.rows.image_table`): whole images only, so a part never splits one."""
        if images.num_rows == 0:
            return
        for path, error in zip(images.column("path").to_pylist(), images.column("error").to_pylist()):
            if error is not None:
                self.errors.append((path, error))
        rows = explode(images)
        self.images += images.num_rows
        self.faces += rows.num_rows - rows.column("face").null_count
        self.pending.append(rows)
        self.pending_images += images.num_rows
        if self.pending_images >= self.part_images or time.monotonic() - self.since >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit the pending rows as one part; :class:`WriteError` (one line) when it cannot be written."""
        self.since = time.monotonic()
        if not self.pending:
            return
        pa, pq, _ = pyarrow()
        path = self.out / f"part-{self.run}-{len(self.parts):05d}.parquet"
        if path.exists():
            raise RuntimeError(f"{path} exists already; not replacing it")
        try:
            with atomic_path(path) as tmp:  # hidden ".part-....tmp-<pid>-<thread>.parquet" until complete
                pq.write_table(pa.concat_tables(self.pending), tmp)
        except OSError as err:  # disk full, quota, permissions: the temporary is gone, the parts before are whole
            text = " ".join((err.strerror or str(err)).split()) if isinstance(err.errno, int) else \
                " ".join(str(err).split())
            raise WriteError(f"cannot write a part to {self.out}: {text}; {len(self.parts)} parts with "
                             f"{self.written_images} images written before are kept (run the same command again "
                             "to go on)") from None
        self.parts.append(path)
        self.written_images += self.pending_images
        self.pending, self.pending_images = [], 0

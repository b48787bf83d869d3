"""Files facemark writes: atomic writes, folders and temporaries (images: :mod:`facemark.images`).

Writes are atomic: a file is written under a temporary name beside its target, flushed to disk,
renamed over the target (``os.replace`` is atomic on POSIX and Windows) and the folder is flushed
too, so an interrupted run never leaves a half-written checkpoint, image, store index or report
behind. A process killed in the middle of a write (``kill -9``) leaves its temporary file;
:func:`remove_stale_temporaries` deletes those of dead processes.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format);
    when the block succeeds, fsync it, rename it to ``path`` and fsync the folder; otherwise
    delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to fsync a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


# ".<stem>.tmp-<pid>-<thread><suffix>" (atomic_path) or ".<name>.tmp-<pid>" (a store being packed)
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(?:-\d+)?(?:\.[^.]*)?$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders that dead processes left in ``folder``; return them.

    Only names made by :func:`atomic_path` or the store writer count, and only when the process
    that made them (the pid in the name) no longer runs, so a concurrent writer is never disturbed.
    """
    removed = []
    for entry in sorted(Path(folder).glob(".*.tmp-*")):
        match = _TEMPORARY.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder ``new`` at ``target`` in one rename, whatever ``target`` held.

    When ``target`` exists, Linux's ``renameat2(RENAME_EXCHANGE)`` swaps the two folders atomically
    (a crash leaves either the old folder or the new one at ``target``, never a mix) and the old one,
    now under ``new``'s temporary name, is deleted (:func:`remove_stale_temporaries` deletes it after
    a crash). Where that call is missing, the old folder is first renamed aside (``.<name>.old.tmp-<pid>``).
    """
    new, target = Path(new), Path(target)
    if target.exists() and not _exchange(new, target):
        aside = target.with_name(f".{target.name}.old.tmp-{os.getpid()}")
        os.replace(target, aside)
        os.replace(new, target)
        new = aside
    elif not target.exists():
        os.replace(new, target)
    fsync_directory(target.parent)
    if new.exists():  # the old folder
        shutil.rmtree(new, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: a kernel or file system without it
        return False
    raise OSError(error, os.strerror(error), str(b))


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # someone else's process, or a pid we cannot ask about
        return True
    return True

"""What the commands that take many images are given: files, folders, globs and URIs, expanded once.

``facemark predict``, ``facemark annotate`` and ``facemark bulk`` call :func:`input_files` (files
and folders); ``bulk`` also takes globs and URIs (:func:`expand_inputs`) and reads URIs through
pyarrow's filesystems (:func:`read_uri`; pyarrow is imported only for a URI).

Only regular files are used. A folder entry with an image suffix that is not one (a symlink loop,
a dangling symlink, a FIFO, a device such as a link to ``/dev/zero``) is never opened: it is listed
in ``skipped`` with the reason, so a user sees what was left out, and reading it can never hang or
run forever. Symlinks to files are followed; symlinks to folders are not descended into.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from facemark.images import IMAGE_SUFFIXES, ImageTooLarge

_GLOB = re.compile(r"[*?\[]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
MISSING = "no such file or folder"


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``s3://bucket/x``, ``file:///x``) rather than a local path."""
    return bool(_URI.match(str(path)))


def not_regular(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file that can be read (None when it is one): a symlink loop, a
    dangling symlink, a FIFO, a device, a socket, a folder, or the error ``stat`` gave. Nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop"
        if err.errno == errno.ENOENT:
            return "a dangling symlink (its target does not exist)" if os.path.islink(path) else MISSING
        return f"cannot read ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
    return f"not a regular file ({kind})"


def input_files(paths: Iterable[str | Path], suffixes: Iterable[str],
                exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """``([(file, its path relative to what was named), ...], skipped)``: the input expansion of
    ``facemark predict``, ``annotate`` and ``bulk``. A named file is used whatever its suffix (its
    relative path is its name); a folder is searched recursively for regular files with one of
    ``suffixes`` (any case), leaving out anything under ``exclude`` (the output folder) when that
    lies inside the folder. ``skipped``: ``{"path", "reason"}`` for a missing path (reason
    :data:`MISSING`) and for entries with such a suffix that are no regular file (:func:`not_regular`)."""
    suffixes = {s.lower() for s in suffixes}
    exclude = exclude.resolve() if exclude else None
    found, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = exclude is not None and exclude != path.resolve() and exclude.is_relative_to(path.resolve())
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() not in suffixes:
                    continue
                reason = not_regular(p)
                if reason is None:
                    if not (inside and p.resolve().is_relative_to(exclude)):
                        found.append((p, p.relative_to(path)))
                elif reason != "not a regular file (a folder)":  # a folder named x.jpg: walked into already
                    skipped.append({"path": str(p), "reason": reason})
        else:
            reason = not_regular(path)
            if reason is None:
                found.append((path, Path(path.name)))
            else:
                skipped.append({"path": str(path), "reason": reason})
    return found, skipped


def expand_inputs(inputs: Iterable[str | os.PathLike],
                  exclude: Path | None = None) -> tuple[list[str], list[dict]]:
    """``(image files as strings, each once, in order; skipped)`` for ``facemark bulk``: files (any
    suffix), folders searched recursively for image files (:func:`input_files`), globs
    (``"photos/**/*.jpg"``, expanded here so a shell's argument limit does not matter) and URIs (a
    file, or a folder listed recursively through pyarrow's filesystems). ``skipped``: what
    :func:`input_files` skips, but for missing inputs: ValueError naming the input when one does
    not exist or a glob matches nothing, checked before any work."""
    paths, skipped, seen = [], [], set()
    for raw in inputs:
        text = os.fspath(raw)
        if is_uri(text):
            found = _expand_uri(text)
        else:
            if _GLOB.search(text) and not os.path.lexists(text):
                matches = sorted(glob.glob(text, recursive=True))
                if not matches:
                    raise ValueError(f"{text}: no file or folder matches")
            else:
                matches = [text]
            files, left_out = input_files(matches, IMAGE_SUFFIXES, exclude)
            for item in left_out:
                if item["reason"] == MISSING:
                    raise ValueError(f"{item['path']}: {item['reason']}")
            skipped += left_out
            found = [str(path) for path, _ in files]
        for path in found:
            key = path if is_uri(path) else os.path.normcase(os.path.abspath(path))  # one file named twice: once
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, skipped


@lru_cache(maxsize=64)
def _filesystem(root: str):
    """``(pyarrow filesystem, its path for root)`` for ``scheme://netloc``: built once per bucket."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root + "/")


def split_uri(uri: str):
    """``(pyarrow filesystem, path inside it)`` for a URI (pyarrow's own ``from_uri`` split, cached per bucket)."""
    parts = urlsplit(uri)
    filesystem, base = _filesystem(f"{parts.scheme}://{parts.netloc}")
    return filesystem, base.rstrip("/") + parts.path


def _expand_uri(uri: str) -> list[str]:
    import pyarrow
    from pyarrow import fs

    try:
        filesystem, path = split_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return [uri]
        if info.type != fs.FileType.Directory:
            raise ValueError(f"{uri}: {MISSING}")
        base, prefix = path.rstrip("/"), uri.rstrip("/")
        found = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except (OSError, pyarrow.ArrowException) as err:
        raise ValueError(f"{uri}: cannot be listed ({' '.join(str(err).split())})") from None
    suffixes = set(IMAGE_SUFFIXES)
    return sorted(prefix + i.path[len(base):] for i in found
                  if i.type == fs.FileType.File and os.path.splitext(i.path)[1].lower() in suffixes)


def read_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a URI's object; :class:`~facemark.images.ImageTooLarge` when it is larger than
    ``max_bytes``, known from its size before its bytes are fetched."""
    filesystem, inner = split_uri(uri)
    with filesystem.open_input_file(inner) as f:
        size = f.size()
        if max_bytes is not None and size > max_bytes:
            raise ImageTooLarge(uri, f"the file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit "
                                     "(facemark --max-mb sets it)")
        return f.read()

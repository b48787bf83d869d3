"""Files facemark writes and the image files it reads.

Writes are atomic: a file is written under a temporary name beside its target, flushed to disk,
renamed over the target (``os.replace`` is atomic on POSIX and Windows) and the folder is flushed
too, so an interrupted run never leaves a half-written checkpoint, image, store index or report
behind. A process killed in the middle of a write (``kill -9``) leaves its temporary file;
:func:`remove_stale_temporaries` deletes those of dead processes.

Images are read by one loader, :func:`read_image` (bytes: :func:`decode_image`), used by data
preparation, the API and the HTTP service alike. It refuses truncated files: ``cv2.imread`` decodes
a JPEG that stops early to a partly grey image instead of failing, even when an end marker is
appended to the cut file, so the JPEG's compressed data is checked to reach the end of the image
(libjpeg-turbo through ``simplejpeg``, which reports what OpenCV's libjpeg only prints). Before any
parser walks a header, :func:`check_structure` refuses headers that cost seconds to walk: millions
of JPEG fill bytes or empty segments, PNG chunks or a PNM comment (Pillow reads them one at a time).
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image


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


# -- reading images ---------------------------------------------------------------------------

#: Image file suffixes OpenCV decodes (its imread list), most common first: annotation readers look for
#: an image beside an annotation in this order, and ``facemark predict`` collects these from folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".dib", ".jpe", ".jp2", ".webp", ".tif", ".tiff", ".pbm", ".pgm",
                  ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".hdr", ".pic")


#: the most pixels an image may declare: every command checks an image's declared size (its header)
#: against this before decoding it (a 1.2 MB PNG can declare 20000 x 20000, 1.2 GB of pixels); the
#: HTTP service's default limit too. ``facemark --max-mpx`` sets it for a run.
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (``reason`` holds the rest)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class ImageHeaderTooLong(ImageError):
    """An image whose header is longer than any parser should walk (:data:`MAX_SEGMENTS`, :data:`MAX_PNM_HEADER`)."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than allowed (``max_pixels``)."""


#: JPEG markers and fill bytes before the image data, or PNG chunks before it, walked at most: real
#: files have a few dozen (a progressive JPEG with an ICC profile split over APP2 segments: < 300)
MAX_SEGMENTS = 1000
#: bytes a PNM (PPM, PGM, PBM) header may take, comments included (Pillow reads it a byte at a time)
MAX_PNM_HEADER = 4096
#: formats whose size Pillow reads from the header and whose pixels OpenCV decodes: what
#: :func:`decode_image` accepts when it is given ``max_pixels``
SIZED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to BGR ``uint8`` (EXIF orientation applied, as browsers do).

    Raises ``FileNotFoundError`` when there is no such file and :class:`ImageError` when it is
    not a complete image in a format OpenCV decodes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror})") from None
    return decode_image(data, path)


def decode_image(data: bytes, name: str | os.PathLike = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes like :func:`read_image`; ``name`` goes into the error message.

    Headers too long to walk are refused first (:func:`check_structure`, :class:`ImageHeaderTooLong`),
    then the size the header declares, before any pixel is decoded (a few-kB PNG can declare
    30000 x 30000): over :data:`MAX_PIXELS` (``facemark --max-mpx``) by default, a header Pillow
    cannot read left to the decoder; with ``max_pixels`` (the HTTP service), over that limit
    (:class:`ImageTooLarge`) or a format outside :data:`SIZED_FORMATS` is refused. Anything else
    unusable is :class:`ImageError`.
    """
    check_structure(data, name)
    if max_pixels is not None:
        image_header(data, max_pixels, name)
    else:
        check_declared_pixels(data, name)
    if data[:2] == b"\xff\xd8" and not jpeg_data_complete(data):  # before OpenCV, which would print libjpeg's warning
        raise ImageError(name, "not a readable image (truncated JPEG: its compressed data stops before the end of the image)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ImageError(name, "not a readable image (corrupt, truncated or an unsupported format)")
    check_pixels(image.shape[1], image.shape[0], name, max_pixels)  # formats whose header PIL cannot read
    return image


def check_pixels(width: int, height: int, name: str | os.PathLike = "image", limit: int | None = None) -> None:
    """:class:`ImageTooLarge` naming ``name`` when ``width x height`` is over ``limit`` (default :data:`MAX_PIXELS`)."""
    limit = MAX_PIXELS if limit is None else limit
    if int(width) * int(height) > limit:
        raise ImageTooLarge(name, f"{width}x{height} ({int(width) * int(height) / 1e6:.3g} Mpx) is over the "
                                  f"{limit / 1e6:g} Mpx limit (facemark --max-mpx sets it)")


def check_declared_pixels(data: bytes, name: str | os.PathLike = "image") -> None:
    """Refuse image bytes whose header declares more than :data:`MAX_PIXELS`, before any pixel is
    decoded (:func:`check_pixels`). A header PIL cannot read is left to the decoder to refuse."""
    try:
        width, height = _header_size(io.BytesIO(data), name)
    except ImageTooLarge:
        raise ImageError(name, f"declares more than {MAX_PIXELS / 1e6:g} Mpx (the limit; facemark --max-mpx sets it)"
                         ) from None
    except ImageError:
        return
    check_pixels(width, height, name)



def image_header(data: bytes, max_pixels: int, name: str | os.PathLike = "image") -> tuple[int, int, str]:
    """``(width, height, format)`` from the header alone (run :func:`check_structure` first);
    :class:`ImageTooLarge` past ``max_pixels``, :class:`ImageError` when the header is not one of
    :data:`SIZED_FORMATS`."""
    try:
        with warnings.catch_warnings():  # PIL warns about large images; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=SIZED_FORMATS) as im:
                (width, height), fmt = im.size, im.format
    except Image.DecompressionBombError as err:  # PIL's own hard limit, above any sensible max_pixels
        raise ImageTooLarge(name, str(err)) from None
    except Exception:
        raise ImageError(name, f"not an image in a supported format ({', '.join(SIZED_FORMATS)})") from None
    if width * height > max_pixels:
        raise ImageTooLarge(name, f"the image is {width}x{height} ({width * height / 1e6:.1f} Mpx); "
                                  f"the limit is {max_pixels / 1e6:g} Mpx")
    return width, height, fmt


def load_image(image) -> np.ndarray:
    """A path (:func:`read_image`), a BGR ``ndarray`` (H, W, 3) / BGRA / grey (H, W), or a PIL image
    -> BGR uint8 ndarray: what :class:`facemark.Landmarker` accepts."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    array = np.asarray(image)
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise ValueError(f"expected an (H, W, 3) BGR image, got an array of shape {array.shape}")
    if array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    return array


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`read_image` would return it, from its header
    alone (no pixel is decoded); :class:`ImageError` when the header cannot be read."""
    return _header_size(path, path)


def _header_size(source, name) -> tuple[int, int]:
    """:func:`image_size` of a path or a file object (``name`` names it in errors)."""
    try:
        with warnings.catch_warnings():  # a huge declared size is not our concern here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: image file not found") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(name, "not a readable image (DecompressionBombError)") from None
    except Exception as err:  # PIL raises many kinds on a bad header
        raise ImageError(name, f"not a readable image ({type(err).__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # EXIF: rotated by 90 degrees


# a marker after entropy-coded data: 0xFF not followed by stuffing (00), a restart marker (D0-D7) or fill (FF)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a PNM header: magic, then width, height (and maxval but for bitmaps), each after whitespace or comments
_PNM_MAGIC = re.compile(rb"P[1-6Ff]\s")
_PNM_HEADER = re.compile(rb"P([1-6Ff])(?:(?:\s|#[^\r\n]*[\r\n])+[^\s#]+){2}")
_PNM_MAXVAL = re.compile(rb"(?:\s|#[^\r\n]*[\r\n])+[^\s#]+")  # maxval (PFM: scale)


def check_structure(data: bytes, name: str | os.PathLike = "image") -> None:
    """Refuse, before any parser walks it, a header that would cost seconds to walk, and a JPEG whose
    segments stop before its end-of-image marker.

    Pillow reads JPEG markers, PNG chunks and PNM comments one at a time in Python: ten million
    JPEG fill bytes take it 10 s, 2.6 million empty comment segments 4.6 s, 870,000 empty PNG chunks
    3 s, a 10 MB PNM comment 4 s. Past :data:`MAX_SEGMENTS` markers (fill bytes included) before a
    JPEG's image data, :data:`MAX_SEGMENTS` PNG chunks before the first ``IDAT`` or a PNM header over
    :data:`MAX_PNM_HEADER` bytes: :class:`ImageHeaderTooLong`. The walk itself is bounded the same way.
    """
    if data[:2] == b"\xff\xd8":
        problem = _jpeg_segments_problem(data)
        if problem == "too long":
            raise ImageHeaderTooLong(name, f"not a usable image (a JPEG with more than {MAX_SEGMENTS} markers "
                                           "and fill bytes in its header)")
        if problem:
            raise ImageError(name, f"not a readable image (truncated JPEG: {problem})")
    elif data[:8] == _PNG_SIGNATURE:
        pos = 8
        for _ in range(MAX_SEGMENTS + 1):
            if pos + 8 > len(data) or data[pos + 4 : pos + 8] in (b"IDAT", b"IEND"):
                return  # the decoder judges the rest
            pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
        raise ImageHeaderTooLong(name, f"not a usable image (a PNG with more than {MAX_SEGMENTS} chunks before "
                                       "its image data)")
    elif _PNM_MAGIC.match(data):
        head = data[:MAX_PNM_HEADER]
        found = _PNM_HEADER.match(head)
        if found and found.group(1) not in b"14":  # greymaps and pixmaps have a maxval too
            found = _PNM_MAXVAL.match(head, found.end())
        if (found is None or found.end() == len(head)) and len(data) > MAX_PNM_HEADER:
            raise ImageHeaderTooLong(name, f"not a usable image (a PNM header longer than {MAX_PNM_HEADER} bytes, "
                                           "or malformed)")


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's segments run through to its end-of-image marker (within :data:`MAX_SEGMENTS`)."""
    return _jpeg_segments_problem(data) is None


def _jpeg_segments_problem(data: bytes) -> str | None:
    """``None`` when a JPEG's segments run to its end-of-image marker; ``"too long"`` past
    :data:`MAX_SEGMENTS` markers and fill bytes; otherwise what is wrong. The entropy-coded data of a
    scan is skipped with one regex search (C speed), whatever its length."""
    pos = 2  # after SOI
    for _ in range(MAX_SEGMENTS):
        if pos + 2 > len(data):
            break
        if data[pos] != 0xFF:
            return "bytes where a marker should be"
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return None
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, RSTn, TEM: no length
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 4 > len(data):
            break
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    else:
        return "too long"
    return "it ends before its end-of-image marker"


def jpeg_data_complete(data: bytes) -> bool:
    """Whether a JPEG's compressed data covers the whole image.

    A file cut short and given an end marker again (``first half + FF D9``) has all its segments,
    and OpenCV decodes it, filling what is missing with grey; libjpeg only prints a warning. This
    decodes the file at 1/8 scale with libjpeg-turbo (``simplejpeg``, about a third of a full
    decode's time) and asks for its warnings: "premature end" means data is missing. Other libjpeg
    complaints are left to OpenCV, which decoded the file.
    """
    try:
        colorspace = simplejpeg.decode_jpeg_header(data, strict=False)[2]
        simplejpeg.decode_jpeg(data, "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY", min_factor=8,
                               strict=True)
    except ValueError as err:
        return "premature end" not in str(err).lower()
    return True

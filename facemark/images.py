"""Images: reading, decoding, header checks and the pixel and byte caps.

One loader serves data preparation, the API, every command and the HTTP service: a path
(:func:`read_image`), bytes (:func:`decode_image`) or an array / PIL image (:func:`load_image`).
Every image is refused in one line naming it before decoding it can cost more than a fixed budget:

* **reads** (:func:`read_image_bytes`): only a regular file (no FIFO, device or ``/dev/zero``
  link), no larger than ``max_bytes`` (checked from ``stat`` before a byte is read; default
  :func:`default_max_bytes` of the pixel cap), read with a bounded read;
* **headers** (:func:`check_structure`): a header that costs seconds to walk (millions of JPEG
  fill bytes or empty segments, PNG chunks, a PNM comment) is :class:`ImageHeaderTooLong`;
* **size** (:func:`image_header`): the width and height the header declares, read by a small
  parser (JPEG, PNG, PNM/PAM/PFM, Sun raster, Radiance HDR, JPEG 2000) or Pillow (BMP, TIFF, WebP),
  over ``max_pixels`` is :class:`ImageTooLarge`; a format whose header is not read (GIF, AVIF,
  OpenEXR, ...) is refused rather than handed to OpenCV, which would decode all of it first;
* **decode-time multipliers**: a JPEG with more than :data:`MAX_JPEG_SCANS` scans, or whose scans
  times pixels exceed :data:`JPEG_SCAN_BUDGET` full-size images (a progressive JPEG decodes every
  scan over the whole image: the scan bomb this stops, measured: docs/reliability.md#images);
* **truncation**: ``cv2.imread`` decodes a JPEG that stops early to a partly grey image, even with
  an end marker appended, so its compressed data is checked to reach the end of the image
  (libjpeg-turbo through ``simplejpeg``, which reports what OpenCV's libjpeg only prints).

The caps are arguments with module-level defaults (:data:`MAX_PIXELS`, :func:`default_max_bytes`)
that nothing changes at run time: ``facemark --max-mpx`` / ``--max-mb`` pass them down.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from typing import NamedTuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image

#: Image file suffixes OpenCV decodes (its imread list), most common first: annotation readers look for
#: an image beside an annotation in this order, and ``facemark predict`` collects these from folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".dib", ".jpe", ".jp2", ".webp", ".tif", ".tiff", ".pbm", ".pgm",
                  ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".hdr", ".pic")

#: the most pixels an image may declare by default: every command checks an image's declared size (its
#: header) against the cap before decoding it (a 1.2 MB PNG can declare 20000 x 20000, 1.2 GB of
#: pixels); the HTTP service's default limit too. ``facemark --max-mpx`` passes another cap down.
MAX_PIXELS = 40_000_000
#: bytes an image file may hold per pixel of the cap, plus :data:`METADATA_BYTES`: the default byte cap
#: (:func:`default_max_bytes`; 40 Mpx -> 176 MB). An uncompressed 8-bit RGBA image takes 4 per pixel.
BYTES_PER_PIXEL = 4
#: room for metadata whatever the pixel cap (EXIF thumbnails, ICC profiles, XMP)
METADATA_BYTES = 16 << 20
#: JPEG markers and fill bytes walked at most, or PNG chunks before the image data: real files have a
#: few dozen (a progressive JPEG with an ICC profile split over APP2 segments: < 300)
MAX_SEGMENTS = 1000
#: scans a JPEG may have: a baseline JPEG has 1 (3 when its components are not interleaved), a
#: progressive one about 10 (libjpeg's script: 10 for colour, 6 for grey; mozjpeg's: up to ~20)
MAX_JPEG_SCANS = 64
#: a JPEG's scans times its pixels may be at most this many times the pixel cap (libjpeg decodes every
#: scan over the whole image: the time grows with scans times pixels; docs/reliability.md#images): a
#: full-size image may have this many scans
JPEG_SCAN_BUDGET = 32
#: bytes a text header may take (PNM, PAM, PFM, Radiance HDR), comments included (Pillow reads PNM a
#: byte at a time; OpenCV's parsers read these headers before the size is known)
MAX_PNM_HEADER = 4096
#: the formats :func:`image_header` reads the size of: the only ones decoded
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PNM", "PAM", "PFM", "SUN", "HDR", "JPEG2000")
#: of those, the ones whose header Pillow reads (with the format name Pillow gives them)
_PILLOW_FORMATS = {"BMP": "BMP", "TIFF": "TIFF", "WEBP": "WEBP"}


def default_max_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """The default file-size cap for a pixel cap: :data:`BYTES_PER_PIXEL` per pixel + :data:`METADATA_BYTES`."""
    return BYTES_PER_PIXEL * int(max_pixels) + METADATA_BYTES


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (``reason`` holds the rest)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class ImageHeaderTooLong(ImageError):
    """An image whose header is longer than any parser should walk (:data:`MAX_SEGMENTS`, :data:`MAX_PNM_HEADER`)."""


class ImageTooLarge(ImageError):
    """An image over a cap: pixels it declares (``max_pixels``), file bytes (``max_bytes``) or JPEG scans."""


class ImageHeader(NamedTuple):
    """What an image's header declares: its stored size (before any EXIF rotation), format and scans."""

    width: int
    height: int
    format: str
    scans: int = 1


# -- reading -----------------------------------------------------------------------------------

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket"}


def _check_file(path, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise ImageError(path, f"not an image file ({kind}; only regular files are read)")
    if info.st_size > max_bytes:
        raise ImageTooLarge(path, f"the file is {info.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit "
                                  "(facemark --max-mb sets it)")


def read_image_bytes(path: str | os.PathLike, max_bytes: int | None = None,
                     max_pixels: int = MAX_PIXELS) -> bytes:
    """The bytes of an image file, read only when it is a regular file of at most ``max_bytes``
    (default :func:`default_max_bytes` of ``max_pixels``), both checked from ``stat`` before
    anything is read; the read itself stops past ``max_bytes`` (a file that grows meanwhile).
    ``FileNotFoundError`` when there is no such file; :class:`ImageError` naming the file otherwise."""
    max_bytes = default_max_bytes(max_pixels) if max_bytes is None else int(max_bytes)
    try:
        _check_file(path, os.stat(path), max_bytes)  # a FIFO or device is never opened
        # O_NONBLOCK: a FIFO swapped in after the stat does not block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except OSError as err:  # permissions, a symlink loop, a name too long
        raise ImageError(path, f"cannot read ({err.strerror})") from None
    try:
        _check_file(path, os.fstat(fd), max_bytes)  # the file opened is the one checked
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror})") from None
    finally:
        os.close(fd)
    if left <= 0:
        raise ImageTooLarge(path, f"the file grew past the {max_bytes / 1e6:g} MB limit while it was read")
    return b"".join(chunks)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None) -> np.ndarray:
    """Decode an image file to BGR ``uint8`` (EXIF orientation applied, as browsers do), within the
    caps (:func:`read_image_bytes`, then :func:`decode_image`).

    Raises ``FileNotFoundError`` when there is no such file and :class:`ImageError` when it is
    not a complete image in a supported format within the caps.
    """
    return decode_image(read_image_bytes(path, max_bytes, max_pixels), path, max_pixels)


def decode_image(data: bytes, name: str | os.PathLike = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes like :func:`read_image`; ``name`` goes into the error message.

    Nothing is decoded before :func:`image_header` has passed it: a header too long to walk is
    :class:`ImageHeaderTooLong`; more than ``max_pixels`` declared, or JPEG scans past their budget,
    :class:`ImageTooLarge`; a format outside :data:`FORMATS`, a truncated JPEG or anything else
    unusable, :class:`ImageError`.
    """
    header = image_header(data, name, max_pixels)
    if header.format == "JPEG" and not jpeg_data_complete(data):  # before OpenCV, which would print libjpeg's warning
        raise ImageError(name, "not a readable image (truncated JPEG: its compressed data stops before the end of the image)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(name, "not a readable image (corrupt, truncated or an unsupported format)")
    check_pixels(image.shape[1], image.shape[0], name, max_pixels)  # a header that lied about its size
    return image


def load_image(image, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None) -> np.ndarray:
    """A path (:func:`read_image`, with the caps), a BGR ``ndarray`` (H, W, 3) / BGRA / grey (H, W)
    or (H, W, 1), or a PIL image -> BGR uint8 ndarray: what :class:`facemark.Landmarker` and the
    detectors accept."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels, max_bytes)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 and array.size:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise ValueError(f"expected an (H, W, 3) BGR image, got an array of shape {array.shape}")
    if array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    return array


def image_size(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`read_image` would return it (EXIF rotation
    applied), from its header alone (no pixel is decoded), with the same caps and refusals."""
    data = read_image_bytes(path, max_bytes, max_pixels)
    width, height, fmt, _ = image_header(data, path, max_pixels)
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):  # formats that carry EXIF
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF: rotated by 90 degrees
                    return height, width
        except Exception:  # an unreadable EXIF block is no rotation, as for the decoder
            pass
    return width, height


# -- the caps ----------------------------------------------------------------------------------

def check_pixels(width: int, height: int, name: str | os.PathLike = "image", limit: int = MAX_PIXELS) -> None:
    """:class:`ImageTooLarge` naming ``name`` when ``width x height`` is over ``limit`` pixels."""
    if int(width) * int(height) > limit:
        raise ImageTooLarge(name, f"{width}x{height} ({int(width) * int(height) / 1e6:.3g} Mpx) is over the "
                                  f"{limit / 1e6:g} Mpx limit (facemark --max-mpx sets it)")


def image_header(data: bytes, name: str | os.PathLike = "image", max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """What ``data``'s header declares, once it has passed every check that comes before decoding:
    :func:`check_structure`, a format of :data:`FORMATS` whose size is read, at most ``max_pixels``
    (:func:`check_pixels`) and, for a JPEG, at most :data:`MAX_JPEG_SCANS` scans and scans times
    pixels within :data:`JPEG_SCAN_BUDGET` times ``max_pixels``."""
    check_structure(data, name)
    header = _read_header(data, name)
    if header.width < 1 or header.height < 1:
        raise ImageError(name, f"not a readable image (a {header.format} header declaring {header.width}x{header.height})")
    check_pixels(header.width, header.height, name, max_pixels)
    pixels = header.width * header.height
    if header.scans > MAX_JPEG_SCANS or header.scans * pixels > JPEG_SCAN_BUDGET * max_pixels:
        raise ImageTooLarge(name, f"a JPEG with {header.scans} scans over {header.width}x{header.height} costs too much to "
                                  f"decode (at most {MAX_JPEG_SCANS} scans, and scans x pixels at most "
                                  f"{JPEG_SCAN_BUDGET} x the {max_pixels / 1e6:g} Mpx limit)")
    return header


# -- headers -----------------------------------------------------------------------------------

# a marker after entropy-coded data: 0xFF not followed by stuffing (00), a restart marker (D0-D7) or fill (FF)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SEP = rb"(?:\s|#[^\r\n]*[\r\n])+"  # whitespace and comments between PNM header fields
# a PNM header: magic, then width, height (and maxval but for bitmaps; PFM: scale), each after whitespace or comments
_PNM_MAGIC = re.compile(rb"P[1-7Ff]\s")
_PNM_HEADER = re.compile(rb"P([1-6Ff])" + _SEP + rb"([^\s#]+)" + _SEP + rb"([^\s#]+)")
_PNM_MAXVAL = re.compile(_SEP + rb"[^\s#]+")  # maxval (PFM: scale)
_PAM_FIELD = re.compile(rb"(?m)^[ \t]*(WIDTH|HEIGHT)[ \t]+(\d+)")
_HDR_MAGIC = re.compile(rb"#\?(RADIANCE|RGBE)")
_HDR_SIZE = re.compile(rb"[-+][XY] +(\d+) +[-+][XY] +(\d+)")
_SUN_MAGIC = b"\x59\xa6\x6a\x95"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SIGNATURE = b"\xff\x4f\xff\x51"
# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _read_header(data: bytes, name) -> ImageHeader:
    """:class:`ImageHeader` of ``data`` (after :func:`check_structure`); :class:`ImageError` for a
    format outside :data:`FORMATS` or a header that cannot be read."""
    fmt = "image"
    try:
        if data[:2] == b"\xff\xd8":
            fmt = "JPEG"
            width, height, scans = _jpeg_walk(data)[1:]
            return ImageHeader(width, height, fmt, scans)
        if data[:8] == _PNG_SIGNATURE:
            fmt = "PNG"
            if data[12:16] != b"IHDR":
                raise ValueError
            return ImageHeader(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), fmt)
        if data[:2] == b"P7":  # PAM: WIDTH and HEIGHT lines before ENDHDR (the largest counts, should one repeat)
            fmt = "PAM"
            head = data[:MAX_PNM_HEADER].split(b"ENDHDR")[0]
            fields = {key: max(int(v) for k, v in _PAM_FIELD.findall(head) if k == key) for key in (b"WIDTH", b"HEIGHT")}
            return ImageHeader(fields[b"WIDTH"], fields[b"HEIGHT"], fmt)
        if _PNM_MAGIC.match(data):
            found = _PNM_HEADER.match(data[:MAX_PNM_HEADER])
            fmt = "PFM" if found.group(1) in b"Ff" else "PNM"
            return ImageHeader(int(found.group(2)), int(found.group(3)), fmt)
        if _HDR_MAGIC.match(data):  # Radiance: text lines, a blank line, then "-Y <height> +X <width>"
            fmt = "HDR"
            head = data[:MAX_PNM_HEADER]
            if _HDR_SIZE.search(head, head.index(b"\n\n")) is None:
                raise ValueError
            # every size-like line of the header counts (the largest): OpenCV's line reader and ours could differ
            height, width = max(((int(a), int(b)) for a, b in _HDR_SIZE.findall(head)), key=lambda s: s[0] * s[1])
            return ImageHeader(width, height, fmt)
        if data[:4] == _SUN_MAGIC:
            fmt = "SUN"
            return ImageHeader(int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big"), fmt)
        if data[:12] == _JP2_SIGNATURE or data[:4] == _J2K_SIGNATURE:
            fmt = "JPEG2000"
            width, height = _jpeg2000_size(data)
            return ImageHeader(width, height, fmt)
    except (ValueError, IndexError, AttributeError, KeyError):
        raise ImageError(name, f"not a readable image (a {fmt} header that cannot be read)") from None
    try:  # BMP, TIFF, WebP: Pillow reads their headers (the structure is bounded: at most max_bytes)
        with warnings.catch_warnings():  # PIL warns about large images; the caps decide
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(_PILLOW_FORMATS)) as im:
                (width, height), fmt = im.size, im.format
    except Image.DecompressionBombError as err:  # PIL's own hard limit, above any sensible max_pixels
        raise ImageTooLarge(name, str(err)) from None
    except Exception:
        raise ImageError(name, f"not an image in a supported format ({', '.join(FORMATS)})") from None
    return ImageHeader(width, height, fmt)


def _jpeg2000_size(data: bytes) -> tuple[int, int]:
    """Size from a JPEG 2000 codestream's SIZ segment (the one OpenJPEG decodes): a raw codestream, or
    the ``jp2c`` box of a JP2 file (its top-level boxes walked, at most :data:`MAX_SEGMENTS`)."""
    pos = 0
    if data[:12] == _JP2_SIGNATURE:
        pos = 12
        for _ in range(MAX_SEGMENTS):
            length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
            header = 8
            if length == 1:  # a 64-bit length follows
                length, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
            if kind == b"jp2c":
                pos += header
                break
            if length < header:  # 0: "to the end of the file", and no codestream came
                raise ValueError
            pos += length
        else:
            raise ValueError
    siz = data[pos : pos + 24]
    if siz[:4] != _J2K_SIGNATURE or len(siz) < 24:
        raise ValueError
    x, y, x0, y0 = (int.from_bytes(siz[k : k + 4], "big") for k in (8, 12, 16, 20))
    return x - x0, y - y0


def check_structure(data: bytes, name: str | os.PathLike = "image") -> None:
    """Refuse, before any parser walks it, a header that would cost seconds to walk, and a JPEG whose
    segments stop before its end-of-image marker.

    Pillow reads JPEG markers, PNG chunks and PNM comments one at a time in Python, so a crafted
    header costs it seconds (measured: docs/reliability.md#service, "A header too long to walk").
    Past :data:`MAX_SEGMENTS` markers (fill bytes included) in a JPEG, :data:`MAX_SEGMENTS` PNG chunks
    before the first ``IDAT`` or a PNM/PAM/PFM/HDR header over :data:`MAX_PNM_HEADER` bytes:
    :class:`ImageHeaderTooLong`. The walk itself is bounded the same way.
    """
    if data[:2] == b"\xff\xd8":
        problem = _jpeg_walk(data)[0]
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
    elif _PNM_MAGIC.match(data) or _HDR_MAGIC.match(data):
        head = data[:MAX_PNM_HEADER]
        if data[:2] == b"P7":
            found = re.search(rb"ENDHDR", head)
        elif data[:1] == b"#":
            found = re.search(rb"\n\n[^\n]*\n", head)
        else:
            found = _PNM_HEADER.match(head)
            if found and found.group(1) not in b"14":  # greymaps and pixmaps have a maxval too
                found = _PNM_MAXVAL.match(head, found.end())
        if (found is None or found.end() == len(head)) and len(data) > MAX_PNM_HEADER:
            raise ImageHeaderTooLong(name, f"not a usable image (a {'HDR' if data[:1] == b'#' else 'PNM'} header "
                                           f"longer than {MAX_PNM_HEADER} bytes, or malformed)")


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's segments run through to its end-of-image marker (within :data:`MAX_SEGMENTS`)."""
    return _jpeg_walk(data)[0] is None


def _jpeg_walk(data: bytes) -> tuple[str | None, int, int, int]:
    """``(problem, width, height, scans)`` of a JPEG's segment walk. ``problem`` is ``None`` when its
    segments run to its end-of-image marker, ``"too long"`` past :data:`MAX_SEGMENTS` markers and fill
    bytes, otherwise what is wrong; ``width x height`` is the largest frame header's (0 x 0 without
    one); ``scans`` counts start-of-scan markers. The entropy-coded data of a scan is skipped with
    one regex search (C speed), whatever its length."""
    pos, width, height, scans = 2, 0, 0, 0  # after SOI
    for _ in range(MAX_SEGMENTS):
        if pos + 2 > len(data):
            break
        if data[pos] != 0xFF:
            return "bytes where a marker should be", width, height, scans
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return None, width, height, scans
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, RSTn, TEM: no length
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 4 > len(data):
            break
        if marker in _SOF and pos + 9 <= len(data):  # length, precision, height, width
            h, w = int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big")
            if w * h >= width * height:
                width, height = w, h
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    else:
        return "too long", width, height, scans
    return "it ends before its end-of-image marker", width, height, scans


def jpeg_data_complete(data: bytes) -> bool:
    """Whether a JPEG's compressed data covers the whole image.

    A file cut short and given an end marker again (``first half + FF D9``) has all its segments,
    and OpenCV decodes it, filling what is missing with grey; libjpeg only prints a warning. This
    decodes the file at 1/8 scale with libjpeg-turbo (``simplejpeg``, about a third of a full
    decode's time) and asks for its warnings: "premature end" means data is missing. Other libjpeg
    complaints are left to OpenCV, which decoded the file. Run it after :func:`image_header`: it
    decodes every scan.
    """
    try:
        colorspace = simplejpeg.decode_jpeg_header(data, strict=False)[2]
        simplejpeg.decode_jpeg(data, "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY", min_factor=8,
                               strict=True)
    except ValueError as err:
        return "premature end" not in str(err).lower()
    return True

"""The one image loader (facemark.images): truncation, header walks, the pixel, byte and scan caps,
formats whose size is read before decoding, and files that are not regular files."""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

import facemark.files
import facemark.images
from facemark.images import (
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    MAX_PNM_HEADER,
    MAX_SEGMENTS,
    ImageError,
    ImageHeaderTooLong,
    ImageTooLarge,
    decode_image,
    default_max_bytes,
    image_header,
    image_size,
    jpeg_complete,
    load_image,
    read_image,
)


def _photo_jpeg(progressive: bool = False) -> bytes:
    image = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8), (5, 5), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1].tobytes()


def _png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture
def no_decoding(monkeypatch):
    """Records every decoder call (OpenCV's and libjpeg-turbo's through simplejpeg): a refusal must come first."""
    calls = []
    monkeypatch.setattr(cv2, "imdecode", lambda *args, **kw: calls.append("cv2.imdecode"))
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *args, **kw: calls.append("simplejpeg.decode_jpeg"))
    return calls


def test_jpeg_completeness_check():
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]):
        data = cv2.imencode(".jpg", image, params)[1].tobytes()
        assert jpeg_complete(data) and jpeg_complete(data + b"trailing bytes")
        assert not any(jpeg_complete(data[:cut]) for cut in (4, 100, len(data) // 2, len(data) - 2))


def test_the_image_loader_refuses_truncated_files(tmp_path):
    """cv2.imread returns a partly grey image for a JPEG that stops early; read_image refuses it."""
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp_path / "whole.jpg").write_bytes(jpeg)
    assert read_image(tmp_path / "whole.jpg").shape == (60, 80, 3)
    assert image_size(tmp_path / "whole.jpg") == (80, 60)
    for cut in (len(jpeg) // 2, len(jpeg) - 2):
        (tmp_path / "cut.jpg").write_bytes(jpeg[:cut])
        with pytest.raises(ImageError, match=r"cut.jpg: not a readable image \(truncated JPEG"):
            read_image(tmp_path / "cut.jpg")
    png = cv2.imencode(".png", image)[1].tobytes()
    with pytest.raises(ImageError, match="upload: not a readable image"):
        decode_image(png[: len(png) // 2], "upload")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_image_size_follows_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 80 wide, shown 40 wide
    Image.new("RGB", (80, 40)).save(tmp_path / "rotated.jpg", exif=exif)
    assert image_size(tmp_path / "rotated.jpg") == (40, 80)
    assert read_image(tmp_path / "rotated.jpg").shape[:2] == (80, 40)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    """`predict` on a 1.2 MB 20000 x 20000 PNG took 2.5 GB: every command checks the declared size
    against the cap (40 Mpx by default, the service's too; `facemark --max-mpx`) before decoding.
    The cap is an argument: nothing global changes it."""
    path = tmp_path / "big.png"
    Image.new("1", (7000, 7000)).save(path)  # 49 Mpx in a few kB
    assert path.stat().st_size < 50_000
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *args: decoded.append(args))
    with pytest.raises(ImageError, match=r"big.png: 7000x7000 \(49 Mpx\) is over the 40 Mpx limit"):
        read_image(path)
    assert decoded == []  # refused before any pixel was decoded
    monkeypatch.undo()
    assert read_image(path, max_pixels=50_000_000).shape == (7000, 7000, 3)  # configurable, per call
    with pytest.raises(ImageTooLarge, match="over the 40 Mpx limit"):
        image_size(path)
    assert not hasattr(facemark.files, "MAX_PIXELS") and facemark.images.MAX_PIXELS == MAX_PIXELS == 40_000_000


def test_a_truncated_jpeg_with_an_end_marker_appended_is_refused(tmp_path):
    """First half + FF D9: the segments run to an end marker, but the compressed data stops early
    (OpenCV decodes it with grey rows); the loader checks that the data reaches the end."""
    for progressive in (False, True):
        jpeg = _photo_jpeg(progressive)
        cut = jpeg[: len(jpeg) // 2] + b"\xff\xd9"
        assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV alone accepts it
        (tmp_path / "cut.jpg").write_bytes(cut)
        with pytest.raises(ImageError, match=r"cut.jpg: not a readable image \(truncated JPEG"):
            read_image(tmp_path / "cut.jpg")  # what `prepare` (facemark.data.store) and the API read with
        with pytest.raises(ImageError, match=r"upload: not a readable image \(truncated JPEG"):
            decode_image(cut, "upload")  # what the service decodes with
        assert decode_image(jpeg).shape == (120, 160, 3)


def test_headers_with_too_many_segments_are_refused_before_any_parser_walks_them():
    """Fill bytes, empty comment segments or empty PNG chunks by the million, or a megabyte-long PNM
    comment, cost seconds in Pillow's header parse; past MAX_SEGMENTS (MAX_PNM_HEADER) the loader
    refuses the image; a few are fine."""
    jpeg = _photo_jpeg()
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    ihdr_end = 8 + 25  # signature + the IHDR chunk

    def padded(n: int) -> list[bytes]:
        return [b"\xff\xd8" + b"\xff" * n + jpeg[2:],  # fill bytes before the next marker
                b"\xff\xd8" + b"\xff\xfe\x00\x02" * n + jpeg[2:],  # empty COM segments
                png[:ihdr_end] + _png_chunk(b"prVt") * n + png[ihdr_end:]]  # empty private ancillary chunks

    for data in padded(MAX_SEGMENTS + 1):
        with pytest.raises(ImageHeaderTooLong, match=rf"upload: .*more than {MAX_SEGMENTS}"):
            decode_image(data, "upload")
    for data in padded(50):
        assert decode_image(data).ndim == 3
    ppm = b"P6\n# a comment\n8 8\n255\n" + bytes(192)
    assert decode_image(ppm).shape == (8, 8, 3)
    with pytest.raises(ImageHeaderTooLong, match=f"longer than {MAX_PNM_HEADER} bytes"):
        decode_image(ppm[:3] + b"#" + b"x" * 100_000 + ppm[3:], "upload")  # Pillow reads a comment byte by byte


def _scan_bomb(scans: int, size: tuple[int, int] = (6300, 6300)) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans, its frame header
    declaring ``size`` (width, height): issue 30's 215 kB file took libjpeg 30 s (every scan is
    decoded over the whole image). A small grey image's scans keep it a few kB."""
    jpeg = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    last = jpeg.rindex(b"\xff\xda")
    body = jpeg[:last] + jpeg[last:-2] * (scans - facemark.images._jpeg_walk(jpeg)[3] + 1) + b"\xff\xd9"
    sof = body.index(b"\xff\xc2")  # progressive frame header: length, precision, height, width
    return body[: sof + 5] + struct.pack(">HH", size[1], size[0]) + body[sof + 9 :]


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding(tmp_path, no_decoding):
    """Issue 30, row 1: a 6300 x 6300 grey progressive JPEG with one small scan repeated ~980 times
    (under the 1,000-marker cap) cost 30 s to decode. Scans are counted in the segment walk: past
    MAX_JPEG_SCANS, or scans x pixels past JPEG_SCAN_BUDGET images at the cap, it is refused in one
    line naming the file, before libjpeg sees it."""
    bomb = _scan_bomb(980)
    assert len(bomb) < 300_000 and facemark.images._jpeg_walk(bomb)[1:] == (6300, 6300, 980)
    (tmp_path / "bomb.jpg").write_bytes(bomb)
    for call in (lambda: read_image(tmp_path / "bomb.jpg"), lambda: decode_image(bomb, "upload"),
                 lambda: load_image(str(tmp_path / "bomb.jpg"))):
        with pytest.raises(ImageTooLarge, match=r"(bomb.jpg|upload): a JPEG with 980 scans") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ImageTooLarge, match=f"{MAX_JPEG_SCANS + 1} scans"):  # a few kB over 64 x 64: the scan cap
        decode_image(_scan_bomb(MAX_JPEG_SCANS + 1, (64, 64)))
    with pytest.raises(ImageTooLarge, match="40 scans"):  # under the scan cap, over the scans x pixels budget
        decode_image(_scan_bomb(40))
    assert no_decoding == []


def test_a_real_progressive_jpeg_decodes():
    assert image_header(_photo_jpeg(progressive=True)).scans <= 10
    assert decode_image(_photo_jpeg(progressive=True)).shape == (120, 160, 3)
    assert decode_image(_scan_bomb(20, (64, 64))).shape == (64, 64, 3)  # 20 scans over a small image: fine


@pytest.mark.parametrize("name, data", [
    ("huge.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + bytes(4096)),
    # a 127-byte line (OpenCV's line reader splits it): the size lines we and OpenCV read differ, the largest counts
    ("huge.pic", b"#?RGBE\n#" + b"c" * 126 + b"\n\n-Y 10 +X 10\n-Y 12000 +X 12000\n" + bytes(400)),
    ("huge.pam", b"P7\nWIDTH 12000\nHEIGHT 12000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(4096)),
    ("huge.pfm", b"PF\n12000 12000\n-1.0\n" + bytes(4096)),
    ("huge.ppm", b"P6\n12000 12000\n255\n" + bytes(4096)),
    ("huge.ras", b"\x59\xa6\x6a\x95" + struct.pack(">7I", 12000, 12000, 24, 0, 1, 0, 0) + bytes(4096)),
    ("huge.jp2", b"\xff\x4f\xff\x51\x00\x2f\x00\x00" + struct.pack(">8I", 12000, 12000, 0, 0, 64, 64, 0, 0)
     + bytes(400)),
])
def test_formats_pillow_cannot_size_are_refused_from_their_header(tmp_path, no_decoding, name, data):
    """Issue 30, row 2: OpenCV decoded all of a 9 MB Radiance .hdr declaring 12000 x 12000 (2.2 GB,
    18 s) before the 40 Mpx check, since Pillow reads no size from .hdr, PAM or PFM headers. Every
    format OpenCV accepts now has its size read from its header first (or is refused)."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageTooLarge, match=rf"{name}: 12000x12000 \(144 Mpx\) is over the 40 Mpx limit"):
        read_image(tmp_path / name)
    assert no_decoding == []


@pytest.mark.parametrize("ext", [".hdr", ".pam", ".pfm", ".ppm", ".pgm", ".pbm", ".sr", ".bmp", ".tif", ".webp",
                                 ".png", ".jpg"])
def test_every_supported_format_is_sized_and_decoded(ext):
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    if ext in (".hdr", ".pfm"):
        image = image.astype(np.float32) / 255
    elif ext in (".pgm", ".pbm"):
        image = image[:, :, 0]
    data = cv2.imencode(ext, image)[1].tobytes()
    assert image_header(data)[:2] == (30, 20)
    assert decode_image(data).shape == (20, 30, 3)


def test_jpeg_2000_is_sized_from_its_codestream():
    for options in ({}, {"no_jp2": True}):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24)).save(buffer, "JPEG2000", **options)
        assert image_header(buffer.getvalue())[:3] == (32, 24, "JPEG2000")


def test_formats_whose_size_is_not_read_are_refused(no_decoding):
    """GIF, AVIF, OpenEXR and anything unknown: refused in one line rather than decoded unsized."""
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    for data in (gif.getvalue(), b"\x76\x2f\x31\x01" + bytes(100), b"\x00\x00\x00\x1cftypavif" + bytes(100), b"",
                 b"not an image"):
        with pytest.raises(ImageError, match="upload: not an image in a supported format"):
            decode_image(data, "upload")
    assert no_decoding == []


def test_a_huge_sparse_file_is_refused_from_its_size_without_reading_it(tmp_path, monkeypatch):
    """Issue 30, row 4: `predict` read all of a 3 GB sparse .jpg (3.3 GB resident) and skipped it
    with a raw OpenCV assertion. The size is checked from stat before a byte is read."""
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(3 << 30)
    monkeypatch.setattr("pathlib.Path.read_bytes", lambda self: pytest.fail("the file was read"))
    monkeypatch.setattr(os, "read", lambda *args: pytest.fail("the file was read"))
    for call in (lambda: read_image(path), lambda: load_image(path), lambda: image_size(path)):
        with pytest.raises(ImageTooLarge, match=r"huge.jpg: the file is 3221.2 MB, over the 176.777 MB limit "
                                                r"\(facemark --max-mb sets it\)$") as err:
            call()
        assert "\n" not in str(err.value)
    assert default_max_bytes() == 4 * MAX_PIXELS + (16 << 20)
    monkeypatch.undo()
    small = tmp_path / "small.jpg"
    small.write_bytes(_photo_jpeg())
    assert read_image(small, max_bytes=small.stat().st_size).shape == (120, 160, 3)
    with pytest.raises(ImageTooLarge, match="over the 0.001 MB limit"):
        read_image(small, max_bytes=1000)


def test_fifos_and_devices_are_refused_without_being_opened(tmp_path):
    """A FIFO named .jpg would block a reader for ever; a /dev/zero link would be read without end."""
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match=r"pipe.jpg: not an image file \(a FIFO; only regular files are read\)"):
        read_image(tmp_path / "pipe.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(ImageError, match=r"zero.jpg: not an image file \(a character device"):
        load_image(tmp_path / "zero.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match=r"folder.png: not an image file \(a folder"):
        image_size(tmp_path / "folder.png")


def test_load_image_takes_paths_arrays_and_pil_images(tmp_path):
    """The detectors' former to_bgr folded into load_image: grey (H, W) and (H, W, 1), BGRA, PIL."""
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for image in (grey, grey[:, :, None], np.dstack([grey] * 4), Image.fromarray(grey)):
        assert load_image(image).shape == (3, 4, 3)
    for bad in (np.zeros((3, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match="expected an"):
            load_image(bad)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((3, 4, 3), np.float32))

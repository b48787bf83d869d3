"""Atomic writes (the folder flushed too), stale temporaries, and the one image loader."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facemark.files import (
    ImageError, atomic_path, decode_image, image_size, jpeg_complete, read_image, remove_stale_temporaries, write_atomic,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (reused only after the pid space wraps around)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_atomic_write_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_atomic(tmp_path / "a.json", "{}")
    assert synced == [False, True]  # the file, then the folder that holds the rename
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".last.tmp-{dead}-139872.pt"  # what kill -9 during save_checkpoint leaves
    stale_file.write_bytes(bytes(100))
    stale_store = tmp_path / f".train.tmp-{dead}"
    (stale_store / "sub").mkdir(parents=True)
    mine = tmp_path / f".best.tmp-{os.getpid()}-1.pt"  # a write in progress in this process
    mine.write_bytes(b"x")
    keep = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / f".x.tmp-{dead}-1.pt.bak-notes"]
    for path in keep:
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_store])
    assert sorted(tmp_path.iterdir()) == sorted([mine, *keep])


def test_an_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


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
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 80 wide, shown 40 wide
    Image.new("RGB", (80, 40)).save(tmp_path / "rotated.jpg", exif=exif)
    assert image_size(tmp_path / "rotated.jpg") == (40, 80)
    assert read_image(tmp_path / "rotated.jpg").shape[:2] == (80, 40)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    """`predict` on a 1.2 MB 20000 x 20000 PNG took 2.5 GB: every command now checks the declared size
    against facemark.files.MAX_PIXELS (the service's 40 Mpx, `facemark --max-mpx`) before decoding."""
    from PIL import Image

    import facemark.files

    path = tmp_path / "big.png"
    Image.new("1", (7000, 7000)).save(path)  # 49 Mpx in a few kB
    assert path.stat().st_size < 50_000
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *args: decoded.append(args))
    with pytest.raises(ImageError, match=r"big.png: 7000x7000 \(49 Mpx\) is over the 40 Mpx limit"):
        read_image(path)
    assert decoded == []  # refused before any pixel was decoded
    monkeypatch.undo()
    monkeypatch.setattr(facemark.files, "MAX_PIXELS", 50_000_000)  # configurable
    assert read_image(path).shape == (7000, 7000, 3)


def _photo_jpeg(progressive: bool = False) -> bytes:
    image = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8), (5, 5), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1].tobytes()


def _png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


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
    from facemark.files import MAX_PNM_HEADER, MAX_SEGMENTS, ImageHeaderTooLong

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

"""The cuhk-5pt list reader: small lists written here, a fuzz test, and the real lists in shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED as SHARED_ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from facemark.data.formats import read_cuhk_list, read_dataset
from facemark.data.prepare import prepare
from facemark.data.record import DataError

SHARED = SHARED_ROOT / "data"  # $FACEMARK_SHARED/data (tests/conftest.py)
CUHK = SHARED / "cuhk-5pt"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
POINTS = np.array([[30, 35], [50, 35], [40, 45], [32, 55], [48, 55]], np.float32)


def _line(name: str, points=POINTS) -> str:
    return " ".join([name, *(repr(float(v)) for v in points[:, 0]), *(repr(float(v)) for v in points[:, 1])])


def _folder(tmp_path: Path, train: list[str], test: list[str]) -> Path:
    (tmp_path / "lfw").mkdir(exist_ok=True)
    (tmp_path / "AFLW").mkdir(exist_ok=True)
    for name in ("lfw/a.jpg", "lfw/b.jpg", "AFLW/c.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((80, 80, 3), 100, np.uint8))
    (tmp_path / "new_training.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "new_testing.txt").write_text("\n".join(test) + "\n")
    return tmp_path


def test_cuhk_reads_x_first_then_y_and_keeps_points_outside_the_crop(tmp_path):
    outside = POINTS.copy()
    outside[0] = (-3.5, -7.5)  # as in the real training list: slightly outside the 80 x 80 crop
    root = _folder(tmp_path, [_line("lfw/a.jpg"), _line("lfw/b.jpg", outside)], [_line("AFLW/c.jpg")])
    samples = read_cuhk_list(root / "new_training.txt")
    assert [s.sample_id for s in samples] == ["lfw/a", "lfw/b"] and {s.subset for s in samples} == {"train"}
    np.testing.assert_array_equal(samples[0].points, POINTS)
    np.testing.assert_array_equal(samples[1].points[0], (-3.5, -7.5))
    faces, skipped = read_dataset(root, format="cuhk-5pt")
    assert len(faces) == 3 and not skipped and [s.subset for s in faces] == ["val", "train", "train"]


def test_cuhk_prepare_keeps_the_lists_split(tmp_path):
    (tmp_path / "src").mkdir()
    root = _folder(tmp_path / "src", [_line("lfw/a.jpg"), _line("lfw/b.jpg")], [_line("AFLW/c.jpg")])
    summary = prepare(root, tmp_path / "out", size=32, progress=False, format="cuhk-5pt")
    assert (summary["train"], summary["val"]) == (2, 1)
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["train"] == ["lfw/a", "lfw/b"] and split["val"] == ["AFLW/c"] and "new_testing" in split["rule"]


@pytest.mark.parametrize("line, words", [
    ("lfw/a.jpg 1 2 3", "expected an image name and 10 coordinates"),
    ("lfw/a.jpg 1 2 3 4 5 6 7 8 9 x", "non-numeric"),
    ("lfw/a.jpg 1 2 3 4 5 6 7 8 9 nan", "NaN"),
    ("lfw/missing.jpg 1 2 3 4 5 6 7 8 9 10", "image not found"),
    (_line("lfw/b.jpg"), "listed twice"),
])
def test_cuhk_errors_name_file_and_line(tmp_path, line, words):
    root = _folder(tmp_path, [_line("lfw/b.jpg"), line], [])
    with pytest.raises(DataError, match=words) as err:
        read_cuhk_list(root / "new_training.txt")
    assert "new_training.txt:2:" in str(err.value)
    with pytest.raises(DataError, match="new_training.txt:2:"):
        read_dataset(root, format="cuhk-5pt")


def test_cuhk_folder_without_lists_is_refused(tmp_path):
    with pytest.raises(DataError, match="new_training.txt.*no such CUHK list"):
        read_dataset(tmp_path, format="cuhk-5pt")


_TOKEN = st.one_of(st.sampled_from(["1", "0", "12.5", "-7.5", "nan", "inf", "-1e39", "1e39", "x", "0x10", "80"]),
                   st.floats(allow_nan=True, allow_subnormal=False).map(repr))
_NAME = st.one_of(st.sampled_from(["imgs/a.jpg", "imgs/missing.jpg", "imgs", "", "../../etc/passwd", "a\x00b"]),
                  st.text(min_size=1, max_size=400))


@FUZZ
@given(st.one_of(
    st.tuples(_NAME, st.lists(_TOKEN, min_size=8, max_size=12)).map(lambda t: " ".join([t[0], *t[1]])),
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
))
@example(_line("n" * 300))  # a name longer than the file system allows
@example(_line("imgs/a.jpg", POINTS.astype(np.float64) * 1e39))
def test_fuzz_cuhk(tmp_path_factory, line):
    folder = tmp_path_factory.getbasetemp() / "fuzz_cuhk"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "imgs" / "a.jpg"), np.full((80, 80, 3), 100, np.uint8))
    path = folder / "new_testing.txt"
    path.write_text(_line("imgs/a.jpg") + "\n" + line + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        samples = read_cuhk_list(path)
    except DataError as err:
        message = str(err)
        assert message.startswith(str(path)) and "\n" not in message and len(message) < len(str(path)) + 400, message
        return
    for sample in samples:
        assert sample.points.dtype == np.float32 and sample.points.shape == (5, 2) and np.isfinite(sample.points).all()


@pytest.mark.skipif(not (CUHK / "new_testing.txt").is_file(), reason="shared cuhk-5pt data absent")
def test_real_cuhk_lists():
    train = read_cuhk_list(CUHK / "new_training.txt")
    test = read_cuhk_list(CUHK / "new_testing.txt")
    assert (len(train), len(test)) == (10000, 2995)
    points = np.stack([s.points for s in train])
    assert (points < 0).any()  # the few points outside the crop are read, not refused
    eyes = np.stack([s.points for s in test])[:, :2, 0]
    assert (eyes[:, 0] < eyes[:, 1]).mean() > 0.95  # point 0 is the image-left eye

"""Annotation readers/writers: small files written here, plus the real samples in shared/data."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from conftest import SHARED as SHARED_ROOT

from facemark.data.formats import (
    WFLW_ATTRIBUTES,
    find_image,
    read_cofw_mat,
    read_dataset,
    read_dlib_xml,
    read_mat_300wlp,
    read_pts,
    read_pts_sample,
    read_wflw_list,
    write_dlib_xml,
    write_pts,
)
from facemark.data.record import DataError, FaceSample

SHARED = SHARED_ROOT / "data"  # $FACEMARK_SHARED/data (tests/conftest.py)
FORMAT_SAMPLES = SHARED / "format-samples"
RNG = np.random.default_rng(0)


def _points(n: int) -> np.ndarray:
    return RNG.uniform(5, 95, size=(n, 2)).astype(np.float32)


def _image(path: Path, size: int = 100) -> Path:
    cv2.imwrite(str(path), np.full((size, size, 3), 128, np.uint8))
    return path


def _pts_text(points_1based, n_points=None, close=True) -> str:
    n = len(points_1based) if n_points is None else n_points
    body = "".join(f"{x} {y}\n" for x, y in points_1based)
    return f"version: 1\nn_points:  {n}\n{{\n{body}" + ("}\n" if close else "")


# --- .pts -------------------------------------------------------------------------------------

def test_pts_header_is_one_based(tmp_path):
    f = tmp_path / "a.pts"
    f.write_text(_pts_text([(1, 1), (10.5, 20.25), (3, 4)]))
    pts = read_pts(f)
    assert pts.dtype == np.float32 and pts.shape == (3, 2)
    np.testing.assert_allclose(pts, [[0, 0], [9.5, 19.25], [2, 3]])


def test_pts_headerless_and_crlf(tmp_path):
    f = tmp_path / "a.pts"
    f.write_bytes(b"1 2\r\n3.5 4.5\r\n\r\n")
    np.testing.assert_allclose(read_pts(f, expected_points=2), [[0, 1], [2.5, 3.5]])


def test_pts_round_trip(tmp_path):
    points = _points(68)
    f = tmp_path / "sub" / "b.pts"
    f.parent.mkdir()
    write_pts(f, points)
    assert f.read_text().startswith("version: 1\nn_points:  68\n{\n")
    np.testing.assert_allclose(read_pts(f, 68), points, atol=1e-3)
    assert [p.name for p in f.parent.iterdir()] == ["b.pts"]  # no temp file left behind


@pytest.mark.parametrize("text, line, words", [
    (_pts_text([(1, 2)] * 3, n_points=4), 7, "n_points: 4"),
    (_pts_text([(1, 2), ("1.5", "abc"), (3, 4)]), 5, "non-numeric"),
    (_pts_text([(1, 2), ("nan", 3)]), 5, "NaN"),
    (_pts_text([(1, 2), (3, 4)], close=False), 5, "closing"),
    (_pts_text([(1, 2), (3, 4)]).replace("4\n}", "4 5\n}"), 5, "expected 'x y'"),
])
def test_pts_errors_name_file_and_line(tmp_path, text, line, words):
    f = tmp_path / "broken_face.pts"
    f.write_text(text)
    with pytest.raises(DataError, match=words) as err:
        read_pts(f)
    assert "broken_face.pts" in str(err.value) and err.value.line == line
    assert f"broken_face.pts:{line}:" in str(err.value)


def test_pts_expected_count(tmp_path):
    f = tmp_path / "few.pts"
    write_pts(f, _points(5))
    with pytest.raises(DataError, match="few.pts.*expected 68 points"):
        read_pts(f, expected_points=68)


def test_pts_sample_needs_image(tmp_path):
    f = tmp_path / "lonely.pts"
    write_pts(f, _points(68))
    with pytest.raises(DataError, match="lonely.pts.*no image"):
        read_pts_sample(f)
    (tmp_path / "lonely.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="lonely.pts.*empty"):
        read_pts_sample(f)
    _image(tmp_path / "lonely.PNG")
    (tmp_path / "lonely.jpg").unlink()
    sample = read_pts_sample(f, root=tmp_path)
    assert sample.image_path.endswith("lonely.PNG") and sample.sample_id == "lonely"


def test_find_image_mixed_case_suffix(tmp_path):
    _image(tmp_path / "x.Jpeg")
    assert find_image(tmp_path / "x.pts").name == "x.Jpeg"


# --- read_dataset ------------------------------------------------------------------------------

def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "mini-300w"
    for rel in ("helen/trainset/1_1", "helen/trainset/1_2", "afw/9_1"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_pts(root / f"{rel}.pts", _points(68))
        _image(root / f"{rel}.jpg")
    return root


def test_read_dataset_names_and_order(tmp_path):
    samples, skipped = read_dataset(_tree(tmp_path))
    assert skipped == []
    assert [s.sample_id for s in samples] == ["afw/9_1", "helen/trainset/1_1", "helen/trainset/1_2"]
    assert [s.subset for s in samples] == ["afw", "helen", "helen"]
    assert {s.dataset for s in samples} == {"mini-300w"}


def test_read_dataset_skip_bad(tmp_path):
    root = _tree(tmp_path)
    (root / "afw" / "9_1.jpg").unlink()
    (root / "helen" / "trainset" / "1_2.pts").write_text(_pts_text([(1, 2)], close=False))
    with pytest.raises(DataError):
        read_dataset(root)
    samples, skipped = read_dataset(root, skip_bad=True)
    assert [s.sample_id for s in samples] == ["helen/trainset/1_1"]
    reasons = dict((Path(p).name, r) for p, r in skipped)
    assert set(reasons) == {"9_1.pts", "1_2.pts"}
    assert "no image" in reasons["9_1.pts"] and "line 4" in reasons["1_2.pts"]


def test_read_dataset_300w_lite():
    root = SHARED / "300w-lite"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    samples, skipped = read_dataset(root, skip_bad=True)
    assert (len(samples), skipped) == (2012, [])
    assert {s.subset for s in samples} == {"afw", "helen", "lfpw"}
    assert all(s.points.shape == (68, 2) for s in samples)


# --- 300W-LP / AFLW2000-3D .mat ----------------------------------------------------------------

def test_mat_written_here(tmp_path):
    points = _points(68)
    _image(tmp_path / "face.jpg")
    scipy.io.savemat(tmp_path / "face.mat", {"pt2d": (points + 1).T.astype(np.float64)})
    np.testing.assert_allclose(read_mat_300wlp(tmp_path / "face.mat").points, points, atol=1e-5)
    # pt3d_68 wins over a 21-point pt2d (AFLW2000-3D layout)
    scipy.io.savemat(tmp_path / "face.mat", {"pt2d": np.ones((2, 21)), "pt3d_68": np.vstack([(points + 1).T, np.zeros(68)])})
    np.testing.assert_allclose(read_mat_300wlp(tmp_path / "face.mat").points, points, atol=1e-5)
    scipy.io.savemat(tmp_path / "face.mat", {"pt2d": np.ones((2, 21))})
    with pytest.raises(DataError, match="face.mat.*2x21"):
        read_mat_300wlp(tmp_path / "face.mat")


def test_mat_real_samples():
    if not FORMAT_SAMPLES.is_dir():
        pytest.skip(f"{FORMAT_SAMPLES} is missing")
    files = sorted(FORMAT_SAMPLES.glob("*/*.mat"))
    assert len(files) == 17
    for f in files:
        sample = read_mat_300wlp(f)
        h, w = cv2.imread(sample.image_path).shape[:2]
        assert sample.points.shape == (68, 2)
        assert (sample.points > 0).all() and (sample.points[:, 0] < w).all() and (sample.points[:, 1] < h).all()
        raw = scipy.io.loadmat(f)
        raw = raw["pt3d_68"] if "pt3d_68" in raw else raw["pt2d"]
        np.testing.assert_allclose(sample.points, raw[:2].T - 1, atol=1e-4)
        # the subject's right eye (36-41) is on the image left of the left eye (42-47)
        assert sample.points[36:42, 0].mean() < sample.points[42:48, 0].mean()


# --- WFLW --------------------------------------------------------------------------------------

def _wflw_line(points, box=(1, 2, 90, 95), flags=(0, 1, 0, 0, 1, 0), name="0--Parade/a.jpg") -> str:
    return " ".join([*(f"{v:.4f}" for v in np.ravel(points)), *map(str, box), *map(str, flags), name])


def test_wflw(tmp_path):
    (tmp_path / "img" / "0--Parade").mkdir(parents=True)
    _image(tmp_path / "img" / "0--Parade" / "a.jpg")
    p1, p2 = _points(98), _points(98)
    lst = tmp_path / "list.txt"
    lst.write_text(_wflw_line(p1) + "\n\n" + _wflw_line(p2, flags=(1, 1, 1, 1, 1, 1)) + "\n")
    s1, s2 = read_wflw_list(lst, tmp_path / "img")
    np.testing.assert_allclose(s1.points, p1, atol=1e-4)  # WFLW is already 0-based
    assert s1.box == (1, 2, 90, 95)
    assert s1.attributes == dict(zip(WFLW_ATTRIBUTES, (0, 1, 0, 0, 1, 0)))
    assert (s1.sample_id, s2.sample_id) == ("0--Parade/a_1", "0--Parade/a_2")
    assert all(s2.attributes.values())


@pytest.mark.parametrize("edit, words", [
    (lambda line: line.replace(" 1 2 90 95 ", " 1 2 90 "), "found 206"),
    (lambda line: "x" + line, "non-numeric"),
    (lambda line: "nan" + line[line.index(" "):], "NaN"),
    (lambda line: line.replace("a.jpg", "missing.jpg"), "image not found"),
])
def test_wflw_errors_name_file_and_line(tmp_path, edit, words):
    (tmp_path / "0--Parade").mkdir()
    _image(tmp_path / "0--Parade" / "a.jpg")
    lst = tmp_path / "wflw_list.txt"
    lst.write_text(_wflw_line(_points(98)) + "\n" + edit(_wflw_line(_points(98))) + "\n")
    with pytest.raises(DataError, match=words) as err:
        read_wflw_list(lst, tmp_path)
    assert "wflw_list.txt:2:" in str(err.value)


# --- COFW (MATLAB v7.3 / HDF5) -----------------------------------------------------------------

def _cofw_file(path: Path, images: list[np.ndarray], phis: np.ndarray) -> None:
    """What MATLAB's ``save -v7.3`` writes: a 512-byte text header, then HDF5 with the cell of
    images as object references and every array transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        ref_ds = f.create_dataset("IsTr", (1, len(images)), dtype=h5py.ref_dtype)
        for i, image in enumerate(images):
            ref_ds[0, i] = refs.create_dataset(f"img{i}", data=image.T).ref
        f.create_dataset("phisTr", data=phis.T)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def test_cofw(tmp_path):
    grey = RNG.integers(0, 255, size=(100, 110), dtype=np.uint8)  # h x w; the points lie in 5..95
    rgb = RNG.integers(0, 255, size=(120, 100, 3), dtype=np.uint8)
    points = [_points(29), _points(29)]
    occluded = np.zeros((2, 29))
    occluded[1, [3, 7]] = 1
    phis = np.stack([np.concatenate([p[:, 0] + 1, p[:, 1] + 1, o]) for p, o in zip(points, occluded)])
    _cofw_file(tmp_path / "COFW_train.mat", [grey, rgb], phis)
    samples = read_cofw_mat(tmp_path / "COFW_train.mat", tmp_path / "images")
    assert [s.sample_id for s in samples] == ["train_0001", "train_0002"]
    for sample, p in zip(samples, points):
        np.testing.assert_allclose(sample.points, p, atol=1e-5)
    assert samples[0].visible.all() and samples[1].visible.sum() == 27 and not samples[1].visible[3]
    np.testing.assert_array_equal(cv2.imread(samples[0].image_path, cv2.IMREAD_UNCHANGED), grey)
    np.testing.assert_array_equal(cv2.imread(samples[1].image_path)[..., ::-1], rgb)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["train_0001.png", "train_0002.png"]


def test_cofw_image_sizes_are_checked_before_anything_is_read(tmp_path):
    """A 12 KB COFW .mat declaring eight 30000 x 30000 images ran 3 minutes and peaked at 8 GB: an
    image's declared size is now checked against the pixel cap (facemark.images.MAX_PIXELS) first."""
    path = tmp_path / "bomb.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        ref_ds = f.create_dataset("IsTr", (1, 1), dtype=h5py.ref_dtype)
        big = f.create_group("#refs#").create_dataset("img0", shape=(3, 8000, 8000), dtype=np.uint8,
                                                      chunks=(3, 500, 500), compression="gzip")  # never written
        ref_ds[0, 0] = big.ref
        f.create_dataset("phisTr", data=np.hstack([np.full(58, 20.0), np.zeros(29)])[None].T)
    assert path.stat().st_size < 50_000
    with pytest.raises(DataError, match=r"bomb.mat: IsTr\{1\}: image 8000x8000 \(64 Mpx\) is over the 40 Mpx limit"):
        read_cofw_mat(path, tmp_path / "images")
    assert not (tmp_path / "images").exists() or not list((tmp_path / "images").iterdir())


def test_cofw_rejects_non_hdf5(tmp_path):
    scipy.io.savemat(tmp_path / "old.mat", {"phisTr": np.zeros((1, 87))})
    with pytest.raises(DataError, match="old.mat.*v7.3"):
        read_cofw_mat(tmp_path / "old.mat", tmp_path)


# --- dlib XML ----------------------------------------------------------------------------------

DLIB_XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset><name>t</name><images>
  <image file='imgs/a.jpg'>
    <box top='10' left='5' width='60' height='70'>
      <part name='02' x='30' y='31'/><part name='00' x='10' y='11'/><part name='01' x='20' y='21'/>
    </box>
    <box top='0' left='0' width='9' height='9' ignore='1'/>
  </image>
</images></dataset>
"""


def test_dlib_xml_read(tmp_path):
    (tmp_path / "imgs").mkdir()
    _image(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "set.xml").write_text(DLIB_XML)
    [sample] = read_dlib_xml(tmp_path / "set.xml")
    np.testing.assert_allclose(sample.points, [[10, 11], [20, 21], [30, 31]])  # sorted by name
    assert sample.box == (5, 10, 65, 80)
    assert Path(sample.image_path) == tmp_path / "imgs" / "a.jpg"


@pytest.mark.parametrize("integer", [True, False])
def test_dlib_xml_round_trip(tmp_path, integer):
    (tmp_path / "imgs").mkdir()
    image = str(_image(tmp_path / "imgs" / "a.jpg"))
    points = [_points(68), _points(68)]
    if integer:  # dlib itself only parses integers, which is what the default writes
        points = [np.round(p) for p in points]
    samples = [FaceSample(image, points[0], box=(1, 2, 50, 60)), FaceSample(image, points[1])]
    write_dlib_xml(tmp_path / "set.xml", samples, integer=integer)
    text = (tmp_path / "set.xml").read_text()
    assert text.count("<image ") == 1 and 'file="imgs/a.jpg"' in text
    assert 'name="00"' in text and 'name="67"' in text
    assert ('x="' + f"{points[0][0, 0]:.0f}" + '"' in text) == integer
    back = read_dlib_xml(tmp_path / "set.xml")
    assert len(back) == 2 and back[0].box == (1, 2, 50, 60)
    np.testing.assert_allclose(back[1].box, [*points[1].min(0), *points[1].max(0)], atol=1e-3 if not integer else 1)
    for sample, p in zip(back, points):
        np.testing.assert_allclose(sample.points, p, atol=1e-3)
    assert [f.name for f in tmp_path.iterdir() if f.is_file()] == ["set.xml"]


def test_dlib_xml_errors(tmp_path):
    (tmp_path / "bad.xml").write_text("<dataset><images>\n<image file='a.jpg'>\n</dataset>")
    with pytest.raises(DataError, match="bad.xml:3") as err:
        read_dlib_xml(tmp_path / "bad.xml")
    assert "malformed" in str(err.value)
    (tmp_path / "gap.xml").write_text(DLIB_XML.replace("name='01'", "name='05'"))
    (tmp_path / "imgs").mkdir()
    _image(tmp_path / "imgs" / "a.jpg")
    with pytest.raises(DataError, match="gap.xml.*part indices"):
        read_dlib_xml(tmp_path / "gap.xml")
    (tmp_path / "imgs" / "a.jpg").unlink()
    (tmp_path / "set.xml").write_text(DLIB_XML)
    with pytest.raises(DataError, match="set.xml.*image not found"):
        read_dlib_xml(tmp_path / "set.xml")


# --- hardening: overflow, far-off points, inconsistent counts, XML safety ---------------------

def test_pts_value_beyond_float32_is_refused_naming_the_line(tmp_path):
    """1e39 is finite in float64 but inf in float32 (what is stored): the check runs after the cast."""
    f = tmp_path / "overflow.pts"
    f.write_text(_pts_text([(10, 10), ("1e39", 20), (30, 30)]))
    with pytest.raises(DataError, match="float32") as err:
        read_pts(f)
    assert err.value.line == 5 and "overflow.pts:5:" in str(err.value)


def test_points_far_outside_the_image_are_refused(tmp_path):
    _image(tmp_path / "face.png", size=100)  # 100 x 100: a point may lie up to 100 px outside it
    f = tmp_path / "face.pts"
    f.write_text(_pts_text([(10, 10), (180, 50), (50, -60)]))  # outside, but within the margin
    assert read_pts_sample(f).points.shape == (3, 2)
    f.write_text(_pts_text([(10, 10), (50, 50), (1e6, 20)]))
    with pytest.raises(DataError, match="outside the 100x100 image") as err:
        read_pts_sample(f)
    assert "face.pts:6:" in str(err.value)
    scipy.io.savemat(tmp_path / "face.mat", {"pt2d": np.vstack([np.full(68, 50.0), np.full(68, -500.0)])})
    with pytest.raises(DataError, match="face.mat.*outside"):
        read_mat_300wlp(tmp_path / "face.mat")


def test_a_67_point_file_among_68_point_ones_is_named(tmp_path):
    root = _tree(tmp_path)
    odd = root / "helen" / "trainset" / "1_2.pts"
    write_pts(odd, _points(67))
    with pytest.raises(DataError, match="67 points, but the other 2 annotations have 68") as err:
        read_dataset(root)
    assert err.value.path == str(odd)
    samples, skipped = read_dataset(root, skip_bad=True)
    assert len(samples) == 2 and [Path(p).name for p, _ in skipped] == ["1_2.pts"]


@pytest.mark.parametrize("doctype", [
    "<!DOCTYPE dataset [<!ENTITY n '07'>]>",  # harmless, but an entity: refused
    "<!DOCTYPE dataset [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
    "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]>",  # the start of a billion laughs
    "<!DOCTYPE dataset [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",  # an external entity
])
def test_dlib_xml_refuses_dtds_and_entities(tmp_path, doctype):
    (tmp_path / "imgs").mkdir()
    _image(tmp_path / "imgs" / "a.jpg")
    text = DLIB_XML.replace("<dataset>", doctype + "\n<dataset>", 1)
    (tmp_path / "evil.xml").write_text(text)
    with pytest.raises(DataError, match="evil.xml.*refused"):
        read_dlib_xml(tmp_path / "evil.xml")


# --- fuzzing: every reader returns finite float32 faces or raises DataError naming the file ---

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

# deterministic (the same inputs on every run, so CI cannot flake) and modest, so the suite stays fast
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    _image(folder / "face.png", size=120)  # the image beside the .pts / .mat files
    (folder / "imgs").mkdir()
    _image(folder / "imgs" / "a.jpg")
    return folder


def refused_or_read(read, path: Path, *args) -> None:
    """The property every reader keeps, whatever the bytes."""
    try:
        result = read(path, *args)
    except DataError as err:
        message = str(err)
        assert message.startswith(str(path)) and "\n" not in message and len(message) < len(str(path)) + 400, message
        return
    for item in result if isinstance(result, list) else [result]:
        points = item if isinstance(item, np.ndarray) else item.points
        assert points.dtype == np.float32 and points.ndim == 2 and np.isfinite(points).all()


def mutants(base: bytes):
    """Bytes near a valid file: cut short, overwritten in places, with junk inserted, or random."""
    def overwrite(edits):
        data = bytearray(base)
        for at, value in edits:
            data[at] = value
        return bytes(data)

    return st.one_of(
        st.integers(0, len(base) - 1).map(lambda k: base[:k]),
        st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), min_size=1, max_size=10).map(overwrite),
        st.tuples(st.integers(0, len(base)), st.binary(min_size=1, max_size=100)).map(lambda t: base[: t[0]] + t[1] + base[t[0]:]),
        st.binary(max_size=600),
    )


_PTS = _pts_text([(x + 1, y + 1) for x, y in _points(68)]).encode()
_PTS_LINES = st.lists(st.sampled_from([
    "version: 1", "n_points: 68", "n_points: 3", "n_points: x", "{", "}", "10 20", "1e39 5", "nan 3", "-1e308 2",
    "12.5 7", "5000 5000", "abc", "1 2 3", "1e-320 0", "\x00\x01", "٣ ٤", "inf -inf",
]), max_size=12).map(lambda lines: "\n".join(lines).encode())


@FUZZ
@given(st.one_of(mutants(_PTS), _PTS_LINES))
@example(_PTS.replace(b"\n", b"\n1e39 5\n", 4))
def test_fuzz_pts(fuzz_dir, data):
    (fuzz_dir / "face.pts").write_bytes(data)
    refused_or_read(read_pts, fuzz_dir / "face.pts")
    refused_or_read(read_pts_sample, fuzz_dir / "face.pts")


def _mat(variables: dict) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


_MAT = _mat({"pt2d": (_points(68) + 1).T.astype(np.float64)})


def _odd_arrays(dtype, shape):  # no subnormals: the test session flushes them to zero (conftest)
    options = {"allow_subnormal": False} if np.dtype(dtype).kind in "fc" else {}
    return hnp.arrays(dtype, shape, elements=hnp.from_dtype(np.dtype(dtype), **options))


_ODD_ARRAYS = st.tuples(
    st.sampled_from([np.float64, np.float32, np.int16, np.uint8, np.complex128, np.bool_]),
    st.sampled_from([(2, 68), (3, 68), (68, 2), (2, 67), (1, 68), (0, 68)]),
).flatmap(lambda t: _odd_arrays(*t))


@FUZZ
@given(st.one_of(mutants(_MAT), st.builds(lambda key, array: _mat({key: array}), st.sampled_from(["pt2d", "pt3d_68"]),
                                          _ODD_ARRAYS)))
@example(_mat({"pt2d": np.array([["x"] * 68] * 2, dtype=object)}))  # strings in pt2d: once a plain ValueError
def test_fuzz_mat(fuzz_dir, data):
    (fuzz_dir / "face.mat").write_bytes(data)
    refused_or_read(read_mat_300wlp, fuzz_dir / "face.mat")


def _wflw_fuzz_line(tokens: list[str]) -> str:
    return " ".join(tokens)


_WFLW_TOKEN = st.one_of(st.sampled_from(["1", "0", "12.5", "nan", "inf", "-1e39", "1e39", "x", "0x10", "2"]),
                        st.floats(allow_nan=True, allow_subnormal=False).map(repr))
_WFLW_NAME = st.one_of(st.sampled_from(["imgs/a.jpg", "imgs/missing.jpg", "imgs", "", "../../etc/passwd", "a\x00b"]),
                       st.text(min_size=1, max_size=400))


@FUZZ
@given(st.one_of(
    st.tuples(st.lists(_WFLW_TOKEN, min_size=190, max_size=210), _WFLW_NAME).map(lambda t: " ".join([*t[0], t[1]])),
    st.text(max_size=300),
))
@example(_wflw_line(_points(98), name="n" * 300))  # a name longer than the file system allows: once an OSError
@example(_wflw_line(_points(98), box=(1, 2, 1e39, 95)))
def test_fuzz_wflw(fuzz_dir, line):
    path = fuzz_dir / "list.txt"
    path.write_text(_wflw_line(_points(98), name="imgs/a.jpg") + "\n" + line + "\n", encoding="utf-8",
                    errors="surrogatepass")
    refused_or_read(read_wflw_list, path, fuzz_dir)


_XML = DLIB_XML.encode("latin-1")
_XML_PIECES = st.lists(st.sampled_from([
    "<dataset>", "</dataset>", "<images>", "</images>", "<image file='imgs/a.jpg'>", "<image>", "</image>",
    "<box top='1' left='2' width='30' height='40'>", "<box top='x' left='2' width='3' height='4'>", "</box>",
    "<part name='00' x='1' y='2'/>", "<part name='01' x='1e39' y='2'/>", "<part name='-1' x='1' y='2'/>",
    "<part name='00' x='nan' y='2'/>", "<!DOCTYPE d [<!ENTITY a 'b'>]>", "&a;", "<![CDATA[x]]>", "<?pi x?>",
]), max_size=14).map(lambda pieces: "".join(pieces).encode())


@FUZZ
@given(st.one_of(mutants(_XML), _XML_PIECES))
@example(_XML.replace(b"imgs/a.jpg", b"n" * 300))  # a name longer than the file system allows: once an OSError
def test_fuzz_dlib_xml(fuzz_dir, data):
    (fuzz_dir / "set.xml").write_bytes(data)
    refused_or_read(read_dlib_xml, fuzz_dir / "set.xml")


def _cofw_bytes(folder: Path, images: list[np.ndarray], phis) -> bytes:
    _cofw_file(folder / "cofw_base.mat", images, np.asarray(phis))
    return (folder / "cofw_base.mat").read_bytes()


_COFW_IMAGES = st.lists(st.one_of(
    st.sampled_from([(100, 100), (0, 0), (0, 5), (100, 100, 3), (100, 100, 4), (3, 3, 3, 3)]).map(
        lambda shape: np.zeros(shape, np.uint8)),
    st.just(np.zeros((50, 50), np.float32)),
), min_size=1, max_size=2)
_COFW_PHIS = st.one_of(
    st.just(np.hstack([np.full(58, 20.0), np.zeros(29)])[None]),
    st.sampled_from([(1, 86), (1, 87), (2, 87), (87,)]).flatmap(
        lambda shape: hnp.arrays(np.float64, shape, elements=st.floats(allow_subnormal=False))),
)


@FUZZ
@given(st.one_of(
    st.tuples(_COFW_IMAGES, _COFW_PHIS),
    st.integers(0, 100_000).map(lambda seed: ("mutant", seed)),
))
@example(([np.zeros((0, 0), np.uint8)], np.hstack([np.full(58, 20.0), np.zeros(29)])[None]))  # once a cv2.error
@example(("truncated", 0))  # once an OSError from h5py
def test_fuzz_cofw(fuzz_dir, case):
    path = fuzz_dir / "cofw.mat"
    images, phis = case
    if isinstance(images, str):  # a valid file, cut short or with bytes overwritten
        base = _cofw_bytes(fuzz_dir, [np.zeros((100, 100), np.uint8)], np.hstack([np.full(58, 20.0), np.zeros(29)])[None])
        rng = np.random.default_rng(phis)
        data = bytearray(base[: len(base) // 2] if images == "truncated" else base)
        if images == "mutant":
            for at in rng.integers(0, len(data), size=rng.integers(1, 10)):
                data[at] = rng.integers(0, 256)
        path.write_bytes(bytes(data))
    else:
        _cofw_file(path, images, phis)
    refused_or_read(read_cofw_mat, path, fuzz_dir / "cofw_images")


def test_a_fifo_named_like_an_annotation_is_skipped_and_listed(synthetic_dataset):
    """A FIFO named x.pts (with x.png beside it) made `prepare` hang: non-regular files are skipped."""
    import os
    import threading

    folder = synthetic_dataset / "faces"
    fifo = folder / "x_1.pts"
    os.mkfifo(fifo)
    os.link(folder / "face000_1.png", folder / "x_1.png")

    def writer():  # a reader that opens the FIFO gets a few bytes and an end, instead of blocking
        with open(fifo, "w") as f:
            f.write("1 2\n")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        samples, skipped = read_dataset(synthetic_dataset)
        assert len(samples) == 40
        assert skipped == [(str(fifo), "not a regular file (a FIFO, device or socket); skipped")]
    finally:
        read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the writer finish if nobody read
        thread.join()
        os.close(read_end)

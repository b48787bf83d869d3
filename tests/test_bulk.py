"""facemark.bulk: the rows of each photo (both engines alike), error rows, resuming without duplicates,
argument checks before any work, and the messages when the optional extra is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.predict import SAMPLE_IMAGE
from tests.conftest import kill_after_parts

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from facemark import bulk as bulk_module  # noqa: E402
from facemark.bulk import COLUMNS, bulk, landmark_dataset, part_files, schema  # noqa: E402
from facemark.inputs import expand_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOOD = ("a.jpg", "sub/b.png", "two.jpg")  # one face, one face (mirrored), two faces
BAD = ("trunc.jpg", "junk.jpg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three photos with faces, one without, a truncated JPEG and a file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    image = cv2.imread(str(SAMPLE_IMAGE))
    small = cv2.resize(image, None, fx=0.6, fy=0.6)
    pad = np.zeros_like(image)
    pad[: small.shape[0], : small.shape[1]] = small
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "sub" / "b.png"), np.ascontiguousarray(image[:, ::-1]))
    cv2.imwrite(str(folder / "two.jpg"), np.hstack([image, pad]))
    cv2.imwrite(str(folder / "blank.png"), np.full((120, 200, 3), 128, np.uint8))
    data = (folder / "a.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (folder / "junk.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not collected from a folder")
    return folder


@pytest.fixture(scope="module")
def reference(photos) -> dict:
    """``Landmarker.detect`` on each photo with a face: the rows must hold exactly these faces."""
    from facemark.api import Landmarker

    landmarker = Landmarker()
    return {name: landmarker.detect(str(photos / name)) for name in GOOD}


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("local") / "out"
    return bulk([photos], out, batch_size=2, part_images=3, progress=False), out


def rows_by_key(out: Path) -> dict:
    table = pq.read_table(out)
    rows = table.to_pylist()
    keys = [(row["path"], row["face"]) for row in rows]
    assert len(keys) == len(set(keys)), "duplicate (path, face) rows"
    return dict(zip(keys, rows))


def check_rows(rows: dict, photos: Path, reference: dict, prefix: str = "") -> None:
    """Every row of the fixture's photos: faces equal Landmarker.detect's, no-face and error rows."""
    expected = {prefix + str(photos / name) for name in GOOD + BAD + ("blank.png",)}
    assert {path for path, _ in rows} == expected
    for name, faces in reference.items():
        path = prefix + str(photos / name)
        found = sorted((face, row) for (p, face), row in rows.items() if p == path)
        assert [face for face, _ in found] == list(range(len(faces))) and faces
        for (_, row), face in zip(found, faces):
            assert np.abs(np.asarray(row["points"]) - face.points).max() <= 0.01
            assert np.allclose(row["box"], face.box, atol=1e-3) and abs(row["score"] - face.score) < 1e-5
            assert np.allclose(row["point_scores"], face.point_scores, atol=1e-5)
            assert abs(row["quality"] - face.quality) < 1e-5
            assert (row["width"], row["height"], row["error"]) == (*cv2.imread(path.removeprefix(prefix)).shape[1::-1],
                                                                   None)
        scores = [row["score"] for _, row in found]
        assert scores == sorted(scores, reverse=True)  # detector-score order
    blank = rows[(prefix + str(photos / "blank.png"), None)]
    assert (blank["width"], blank["height"], blank["error"], blank["points"]) == (200, 120, None, None)
    for name in BAD:
        row = rows[(prefix + str(photos / name), None)]
        assert row["error"] and "\n" not in row["error"] and row["width"] is None and row["points"] is None
    assert "truncated" in rows[(prefix + str(photos / "trunc.jpg"), None)]["error"]


def test_local_engine_rows(photos, reference, local_run):
    summary, out = local_run
    rows = rows_by_key(out)
    check_rows(rows, photos, reference)
    assert pq.read_schema(part_files(out)[0]).remove_metadata() == schema()
    assert tuple(pq.read_schema(part_files(out)[0]).names) == COLUMNS
    assert len(reference["two.jpg"]) == 2
    assert summary["images"] == 6 and summary["errors"] == 2 and summary["already_done"] == 0
    assert summary["skipped"] == [] and summary["startup_images"] == 2  # batches of 2: the first rows
    assert 0 < summary["startup_s"] < summary["seconds"] and summary["steady_images_per_s"] > 0
    assert summary["faces"] == sum(len(faces) for faces in reference.values())
    assert len(part_files(out)) == len(summary["parts"]) == 2  # 3 images a part (batches of 2): 4 + 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    settings = json.loads((out / bulk_module.SETTINGS_FILE).read_text())
    assert settings["detector"] == "blazeface" and settings["min_quality"] == 0.05


def test_inputs_files_globs_and_uris(photos, reference, tmp_path):
    """Named files, globs and file:// URIs; one file named twice is done once, as first named."""
    paths = [str(photos / "a.jpg"), str(photos / "*.png"), photos.as_uri() + "/sub/", str(photos / "a.jpg")]
    assert expand_inputs(paths) == ([str(photos / "a.jpg"), str(photos / "blank.png"),
                                     photos.as_uri() + "/sub/b.png"], [])
    summary = bulk(paths, tmp_path / "out", progress=False)
    rows = rows_by_key(tmp_path / "out")
    assert summary["images"] == 3 and summary["faces"] == 2
    uri_row = rows[(photos.as_uri() + "/sub/b.png", 0)]
    assert np.abs(np.asarray(uri_row["points"]) - reference["sub/b.png"][0].points).max() <= 0.01


def test_ray_actor_reads_files_and_uris_and_reports_unreadable_ones(photos):
    """The ray engine's actor reads the files itself (a plain class: no Ray needed): URIs fetched
    side by side, a file that cannot be read an error row, not an exception."""
    from facemark.bulk.ray_engine import LandmarkActor

    actor = LandmarkActor("default", None, 0.05, 1, 40_000_000, explode_rows=False, cwd=str(photos))
    paths = [(photos / "a.jpg").as_uri(), (photos / "gone.jpg").as_uri(), "sub/b.png"]
    table = actor({"path": np.array(paths)})
    assert table.column("path").to_pylist() == paths
    errors = table.column("error").to_pylist()
    assert errors[0] is None and errors[2] is None and errors[1] and "\n" not in errors[1]
    assert table.column("width").to_pylist()[::2] == [cv2.imread(str(photos / "a.jpg")).shape[1]] * 2


def test_resume_adds_the_rest_and_refuses_other_settings(photos, tmp_path):
    out = tmp_path / "out"
    first = bulk([photos / "a.jpg", photos / "junk.jpg"], out, progress=False)
    assert (first["images"], first["errors"]) == (2, 1)
    again = bulk([photos], out, part_images=2, progress=False)
    assert (again["already_done"], again["images"]) == (2, 4)  # an error row counts as done
    assert len(rows_by_key(out)) == 7  # 4 faces, 1 no-face row, 2 error rows, each once
    nothing = bulk([photos], out, progress=False)
    assert (nothing["already_done"], nothing["images"], nothing["parts"]) == (6, 0, [])
    with pytest.raises(ValueError, match="min_quality"):
        bulk([photos], out, min_quality=0.5, progress=False)
    with pytest.raises(ValueError, match="another facemark bulk run"):
        lock = bulk_module.lock(out)
        try:
            bulk([photos], out, progress=False)
        finally:
            lock.close()


SLOW_RUN = """
import sys, time
import facemark.bulk as b, facemark.bulk.rows as rows
table = rows.image_table
def slow(*args):
    time.sleep(0.4)
    return table(*args)
rows.image_table = slow
b.bulk(sys.argv[2:], sys.argv[1], batch_size=1, part_seconds=0.2, progress=False)
"""


def test_resume_after_kill_9(photos, reference, tmp_path):
    """kill -9 in the middle of a run, then the same run again: every image once, no half part read."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes((photos / "a.jpg").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    # a part file a killed process (no such pid) left half-written: ignored and removed
    (out / ".part-x-00000.tmp-999999999-1.parquet").write_bytes(b"PAR1 half")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(out), str(folder)], env=env, cwd=ROOT)
    kill_after_parts(process, out)
    written = len(part_files(out))
    assert process.returncode == -signal.SIGKILL and 2 <= written < 12
    summary = bulk([folder], out, progress=False)
    assert summary["already_done"] == len(bulk_module.done_paths(out)) - summary["images"] >= 2
    rows = rows_by_key(out)  # asserts no duplicate (path, face)
    assert sorted(path for path, _ in rows) == sorted(str(p) for p in folder.iterdir())
    assert not [p for p in out.iterdir() if p.name.startswith(".part")]
    for row in rows.values():
        assert np.abs(np.asarray(row["points"]) - reference["a.jpg"][0].points).max() <= 0.01


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers: must be at least 1"),
    (["--batch-size", "x"], "--batch-size: expected a whole number"),
    (["--min-quality", "1.5"], "--min-quality: expected a number in 0..1"),
    (["--engine", "spark"], "--engine: invalid choice"),
])
def test_cli_rejects_bad_arguments(photos, tmp_path, capsys, argv, message):
    from facemark.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bulk", str(photos), "--out", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_errors_name_the_input_before_any_work(photos, tmp_path, capsys):
    from facemark.cli import main

    out = tmp_path / "out"
    cases = [
        (["bulk", str(tmp_path / "missing"), "--out", str(out)], f"{tmp_path / 'missing'}: no such file or folder"),
        (["bulk", str(tmp_path / "*.jpg"), "--out", str(out)], "no file or folder matches"),
        (["bulk", str(photos), "--out", str(out), "--address", "auto"], "--address joins a Ray cluster"),
        (["bulk", str(photos), "--out", str(photos / "a.jpg")], "--out names a file"),
        (["bulk", str(photos), "--out", str(out), "--model", str(tmp_path / "x.onnx")], "model file not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("facemark: error:") and "\n" not in err
    assert not out.exists()


def test_cli_run_prints_a_summary(photos, tmp_path, capsys):
    from facemark.cli import main

    assert main(["bulk", str(photos / "a.jpg"), str(photos / "junk.jpg"), "--out", str(tmp_path / "out"),
                 "--min-quality", "0"]) == 0
    out = capsys.readouterr()
    assert "2 images, 1 faces, 1 images with errors" in out.out and "images/s" in out.out
    assert f"error {photos / 'junk.jpg'}: not a" in out.err  # not a readable / supported image


def test_missing_extra_is_one_line_naming_it(photos, tmp_path, monkeypatch, capsys):
    from facemark.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r'pip install "facemark\[ray\]"'):
        bulk([photos], tmp_path / "out", engine="ray")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["bulk", str(photos), "--out", str(tmp_path / "out")]) == 2
    assert 'pip install "facemark[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the ray engine


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # workers import this checkout's facemark, as the tests do
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own
def test_ray_engine_writes_the_local_rows(ray_session, photos, reference, local_run, tmp_path):
    summary = bulk([photos], tmp_path / "out", engine="ray", batch_size=2, workers=2, progress=False)
    assert ray_session.is_initialized()  # a session it did not start is left running
    assert (summary["images"], summary["errors"], summary["workers"], summary["threads"]) == (6, 2, 2, 1)
    rows = rows_by_key(tmp_path / "out")
    check_rows(rows, photos, reference)
    local = rows_by_key(local_run[1])
    assert rows.keys() == local.keys()
    for key, row in rows.items():
        if row["points"] is not None:
            assert np.abs(np.asarray(row["points"]) - np.asarray(local[key]["points"])).max() <= 0.01


def test_ray_engine_refuses_more_workers_than_fit(ray_session, photos, tmp_path):
    with pytest.raises(ValueError, match="--workers 3: the Ray cluster has 2 CPUs"):
        bulk([photos / "a.jpg"], tmp_path / "out", engine="ray", workers=3, progress=False)
    assert not part_files(tmp_path / "out")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_landmark_dataset_takes_read_images_and_read_binary_files(ray_session, photos, reference):
    ray = ray_session
    good = [str(photos / name) for name in GOOD]
    decoded = ray.data.read_images(good, include_paths=True, mode="RGB")
    raw = ray.data.read_binary_files(good + [str(photos / "trunc.jpg")], include_paths=True)
    for ds, errors in ((decoded, 0), (raw, 1)):
        table = pa.Table.from_pylist(landmark_dataset(ds, batch_size=2, workers=1).take_all())
        assert set(table.column_names) == set(COLUMNS)
        rows = table.to_pylist()
        assert sum(row["error"] is not None for row in rows) == errors
        for name, faces in reference.items():
            found = sorted((row["face"], row["points"]) for row in rows if row["path"].endswith(name))
            assert [face for face, _ in found] == list(range(len(faces)))
            for (_, points), face in zip(found, faces):
                assert np.abs(np.asarray(points) - face.points).max() <= 0.01

"""`facemark data prepare --format`: every reader reachable from the command line, format detection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import synthetic_face
from test_formats import _cofw_file, _wflw_line

from facemark.cli import main
from facemark.data.formats import detect_format, read_dataset, write_dlib_xml
from facemark.data.store import Store


def _faces(n: int = 30):
    rng = np.random.default_rng(5)
    return [synthetic_face(rng, size=120) for _ in range(n)]


def _prepare(argv, out) -> Store:
    assert main(["data", "prepare", *argv, "--out", str(out), "--size", "64"]) == 0
    return Store.open(out / "train")


def test_pts_beside_any_image_format_opencv_reads(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    for i, (image, points) in enumerate(_faces()):
        cv2.imwrite(str(root / f"f{i:02d}_1{('.ppm', '.bmp', '.tif')[i % 3]}"), image)
        (root / f"f{i:02d}_1.pts").write_text("version: 1\nn_points: 68\n{\n"
                                              + "".join(f"{x + 1} {y + 1}\n" for x, y in points) + "}\n")
    assert detect_format(root) == "pts"
    store = _prepare([str(root)], tmp_path / "out")
    assert store.num_points == 68 and {p.split(".")[-1] for p in (s["image"] for s in store.samples)} >= {"ppm", "bmp", "tif"}


def test_dlib_xml(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    from facemark.data.record import FaceSample

    samples = []
    for i, (image, points) in enumerate(_faces()):
        cv2.imwrite(str(root / f"f{i:02d}.png"), image)
        samples.append(FaceSample(str(root / f"f{i:02d}.png"), points, sample_id=f"f{i:02d}_1"))
    write_dlib_xml(tmp_path / "faces.xml", samples)
    assert detect_format(tmp_path / "faces.xml") == "dlib-xml"
    store = _prepare([str(tmp_path / "faces.xml")], tmp_path / "out")
    store_val = Store.open(tmp_path / "out" / "val")
    assert store.num_points == 68 and len(store) + len(store_val) == 30


def test_wflw_list_with_its_image_folder(tmp_path):
    images = tmp_path / "WFLW_images" / "0--Parade"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, (image, points) in enumerate(_faces()):
        cv2.imwrite(str(images / f"p{i:02d}.jpg"), image)
        x0, y0, x1, y1 = *points.min(0), *points.max(0)
        points98 = np.stack([rng.uniform(x0, x1, 98), rng.uniform(y0, y1, 98)], 1)
        lines.append(_wflw_line(points98, name=f"0--Parade/p{i:02d}.jpg"))
    (tmp_path / "list_98pt.txt").write_text("\n".join(lines) + "\n")
    argv = [str(tmp_path / "list_98pt.txt"), "--format", "wflw", "--images", str(tmp_path / "WFLW_images")]
    store = _prepare(argv, tmp_path / "out")
    assert store.num_points == 98 and store.samples[0]["id"].startswith("0--Parade/p")


def test_cofw_extracts_its_images_into_the_output(tmp_path):
    rng = np.random.default_rng(1)
    images, phis = [], []
    for _ in range(30):
        images.append(rng.integers(0, 255, size=(100, 110), dtype=np.uint8))
        points = rng.uniform(20, 80, size=(29, 2))
        phis.append(np.concatenate([points[:, 0] + 1, points[:, 1] + 1, np.zeros(29)]))
    _cofw_file(tmp_path / "COFW_train.mat", images, np.stack(phis))
    store = _prepare([str(tmp_path / "COFW_train.mat")], tmp_path / "out")  # detected: an HDF5 .mat file
    assert store.num_points == 29 and (tmp_path / "out" / "images" / "train_0001.png").is_file()


def test_ambiguous_or_wrong_formats_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not a list\n")
    with pytest.raises(Exception, match="expected 207 fields|found"):
        read_dataset(tmp_path / "notes.txt")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(Exception, match="--format"):
        read_dataset(tmp_path / "x.json")
    with pytest.raises(Exception, match="one annotation file"):
        read_dataset(tmp_path, format="wflw")


def test_a_killed_prepare_leaves_the_previous_folder_whole(synthetic_dataset, tmp_path):
    """24 random `kill -9` into a folder holding an older store left 12 new split.json with the old
    stores and 7 new train stores with the old val: prepare now builds the whole folder beside it
    and switches it in with one rename."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from facemark.data.formats import write_pts
    from facemark.data.prepare import prepare

    out = tmp_path / "data"
    prepare(synthetic_dataset, out, size=48, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rng = np.random.default_rng(9)  # the dataset grows, and the next prepare dies after its train store
    for i in range(10):
        image, points = synthetic_face(rng)
        cv2.imwrite(str(synthetic_dataset / "faces" / f"new{i:02d}_1.png"), image)
        write_pts(synthetic_dataset / "faces" / f"new{i:02d}_1.pts", points)
    script = textwrap.dedent(f"""
        import os, signal
        import facemark.data.prepare as p
        original = p.write_store
        def write_then_die(samples, out_dir, **kw):
            result = original(samples, out_dir, **kw)
            if out_dir.name == "train":
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        p.write_store = write_then_die
        p.prepare({str(synthetic_dataset)!r}, {str(out)!r}, size=48, progress=False)
    """)
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(repo)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # the next run removes what the killed one left and switches the new folder in
    assert prepare(synthetic_dataset, out, size=48, progress=False)["faces"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "synth"]


def test_train_and_eval_refuse_a_folder_mixed_from_two_prepare_runs(synthetic_dataset, tmp_path):
    """split.json, train/ and val/ each record the id of the prepare run that wrote them."""
    import shutil

    from facemark.config import load_config
    from facemark.data.faces import load_faces
    from facemark.data.prepare import prepare
    from facemark.data.record import DataError
    from facemark.train import train

    for name in ("a", "b"):
        prepare(synthetic_dataset, tmp_path / name, size=48, progress=False)
    shutil.rmtree(tmp_path / "a" / "val")
    shutil.copytree(tmp_path / "b" / "val", tmp_path / "a" / "val")
    assert len(load_faces(tmp_path / "b", "val")[0]) > 0  # a whole folder is fine
    with pytest.raises(DataError, match="come from different `facemark data prepare` runs"):
        load_faces(tmp_path / "a", "val")
    config = load_config(None, [f"data={tmp_path / 'a'}", f"out={tmp_path / 'run'}", "steps=1", "batch_size=4",
                                "input_size=32", "num_threads=1"])
    with pytest.raises(DataError, match=f"{tmp_path / 'a'}: split.json, train/ and val/ come from different"):
        train(config)


def test_prepare_refuses_to_replace_a_folder_it_did_not_write(synthetic_dataset, tmp_path):
    """The output folder is replaced whole: one holding anything else (the dataset itself) is refused."""
    from facemark.data.prepare import prepare
    from facemark.data.record import DataError

    with pytest.raises(DataError, match="holds faces, which `facemark data prepare` did not write"):
        prepare(synthetic_dataset, synthetic_dataset, size=48, progress=False)
    assert len(list((synthetic_dataset / "faces").glob("*.pts"))) == 40

"""Known-answer tests of the evaluation harness (facemark.evaluate), on synthetic faces and 3 real ones."""

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark import metrics
from facemark.baselines import MeanShapePredictor
from facemark.cli import load_predictor
from facemark.data.formats import read_dataset
from facemark.data.record import FaceSample
from facemark.detectors import Detection
from facemark.evaluate import compare, evaluate
from facemark.geometry import box_from_points


class Oracle:
    """Returns the ground truth of the face whose landmark box it is given, shifted by ``shift`` px."""

    name = "oracle"

    def __init__(self, faces, shift=(0.0, 0.0)):
        self.truth = {np.round(box_from_points(f.points), 3).tobytes(): f.points for f in faces}
        self.shift = np.asarray(shift, dtype=np.float64)

    def predict(self, image_bgr, box):
        return self.truth[np.round(box, 3).tobytes()].astype(np.float64) + self.shift


@pytest.fixture
def faces(synthetic_dataset):
    return read_dataset(synthetic_dataset)[0]


def test_perfect_predictor_scores_zero(faces):
    result = evaluate(Oracle(faces), faces, progress=False)
    s = result["summary"]
    assert s["mean"] == 0 and s["p99"] == 0 and s["fr@10"] == 0 and s["fr@8"] == 0
    assert s["auc@10"] == 1.0 and s["auc@8"] == 1.0
    assert result["evaluated"] == len(faces) and result["skipped"] == []
    assert "ground-truth landmark box" in result["normalisation_text"] and "36, 45" in result["normalisation_text"]


def test_shift_gives_shift_over_inter_ocular(faces):
    result = evaluate(Oracle(faces, shift=(3.0, 4.0)), faces, progress=False)  # every point moves 5 px
    inter_ocular = np.array([np.linalg.norm(f.points[45].astype(float) - f.points[36]) for f in faces])
    assert result["summary"]["mean"] == pytest.approx(np.mean(5.0 / inter_ocular), rel=1e-9)
    assert [f["nme"] for f in result["per_face"]] == pytest.approx(5.0 / inter_ocular, rel=1e-6)
    assert result["per_point"] == pytest.approx([np.mean(5.0 / inter_ocular)] * 68, rel=1e-5)


def test_rotated_faces_protocol(faces):
    """``rotate``: each face is turned by a seeded angle about its centre and scored against its
    rotated points; an oracle of exactly those rotated faces scores zero, and no other."""
    from facemark.geometry import rotate_face
    from facemark.images import read_image

    rotated = []
    for i, face in enumerate(faces):
        angle = np.random.default_rng([0, i, 1]).uniform(-30, 30)
        rotated.append(FaceSample(face.image_path, rotate_face(read_image(face.image_path), face.points, angle)[1]))
    result = evaluate(Oracle(rotated), faces, rotate=30, progress=False)
    assert result["summary"]["mean"] == pytest.approx(0, abs=1e-9) and result["rotate"] == 30
    assert "rotated by a random angle in ±30°" in result["box_protocol"]
    with pytest.raises(KeyError):  # upright boxes are not the rotated faces' boxes
        evaluate(Oracle(rotated), faces, progress=False)
    # detector boxes: the detector sees the rotated photo and the face is matched to its rotated box
    detector = ListDetector([[box_from_points(f.points)] for f in rotated])
    result = evaluate(Oracle(rotated), faces, box="detector", detector=detector, rotate=30, progress=False)
    assert result["detection"]["rate"] == 1 and result["summary"]["mean"] == pytest.approx(0, abs=1e-9)
    assert "on each photo rotated by a random angle in ±30°" in result["box_protocol"]
    with pytest.raises(ValueError, match="rotate must be in 0..180"):
        evaluate(Oracle(rotated), faces, rotate=-5, progress=False)


def test_worst_gallery_shows_the_rotated_photo(tmp_path):
    """The worst-faces tiles are cut from the photo as it was scored: rotated, for ``rotate``."""
    from facemark.data.store import region_box
    from facemark.evaluate import _worst_gallery
    from facemark.geometry import apply_affine, crop_affine, rotate_face

    points = np.array([[60 + 80 * np.cos(t), 120 + 90 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 68)]) + 40
    image = np.zeros((320, 320, 3), np.uint8)
    cv2.circle(image, tuple(int(v) for v in points[0]), 9, (255, 255, 255), -1)  # a white disc on point 0
    cv2.imwrite(str(tmp_path / "face.png"), image)
    _, gt, matrix = rotate_face(image, points, 40.0)
    record = {"id": "f", "nme": 0.1, "file": str(tmp_path / "face.png"), "pred": gt, "gt": gt, "matrix": matrix}
    tile = _worst_gallery([record], 1)
    x, y = apply_affine(crop_affine(region_box(gt, 1.2), 192), gt[:1])[0]
    assert tile[int(round(y)), int(round(x)) + 4].min() > 200  # beside the drawn point: the disc, rotated with it
    record["matrix"] = None  # the unrotated photo has no disc there
    assert _worst_gallery([record], 1)[int(round(y)), int(round(x)) + 4].max() < 50


def test_worst_gallery_ids_read_on_light_photos_and_it_has_a_key(tmp_path):
    """On a white photo the face id still reads (white text on a dark box, not white on white), and a
    strip under the tiles says which colour is the prediction and which the ground truth."""
    from facemark.evaluate import _worst_gallery

    points = np.array([[100 + 60 * np.cos(t), 100 + 70 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 68)])
    cv2.imwrite(str(tmp_path / "white.png"), np.full((200, 200, 3), 255, np.uint8))
    record = {"id": "afw/white", "nme": 0.1, "file": str(tmp_path / "white.png"), "pred": points + 2, "gt": points,
              "matrix": None}
    gallery = _worst_gallery([record], 1)
    assert gallery.shape[0] > 192 and gallery.shape[1] == 192  # one tile, and the key under it
    label = gallery[2:16, 2:80].astype(int)
    assert np.median(label) < 100 and label.max() > 200  # dark box, light text
    key = gallery[192:]
    assert ((key[..., 2] > 200) & (key[..., 1] < 80)).any() and ((key[..., 1] > 200) & (key[..., 2] < 80)).any()


@pytest.mark.parametrize("kind", list(metrics.NORMALISATIONS))
def test_every_normalisation(faces, kind):
    result = evaluate(Oracle(faces, shift=(2.0, 0.0)), faces, normalisation=kind, progress=False)
    norm = metrics.normaliser(np.stack([f.points for f in faces]), kind)
    assert result["summary"]["mean"] == pytest.approx(np.mean(2.0 / norm), rel=1e-9)
    assert result["normalisation"] == kind and result["normalisation_text"].startswith(metrics.describe(kind)[:20])


def test_bad_images_are_skipped_not_fatal(synthetic_dataset, faces):
    corrupt = faces[3].image_path
    with open(corrupt, "wb") as f:
        f.write(b"this is not a png")
    missing = FaceSample("does/not/exist.png", faces[0].points, sample_id="ghost")
    result = evaluate(Oracle(faces), [*faces, missing], progress=False)
    assert result["evaluated"] == len(faces) - 1
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    assert set(reasons) == {corrupt, "does/not/exist.png"}
    assert ("corrupt" in reasons[corrupt] or "not an image" in reasons[corrupt]) and "not found" in reasons["does/not/exist.png"]
    # a dataset folder with a broken annotation: listed with its file name too
    (synthetic_dataset / "faces" / "face000_1.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n")
    result = evaluate(Oracle(faces), synthetic_dataset, split="all", progress=False)
    assert any(s["file"].endswith("face000_1.pts") for s in result["skipped"])
    assert any(s["file"] == corrupt for s in result["skipped"])


def test_outputs_and_compare(tmp_path, faces):
    for name, shift in (("perfect", (0, 0)), ("shifted", (2, 1))):
        evaluate(Oracle(faces, shift), faces, out=tmp_path / name, worst_k=4, progress=False)
    for name in ("perfect", "shifted"):
        data = json.loads((tmp_path / name / "metrics.json").read_text())
        assert len(data["per_face"]) == len(faces) and "ci95" in data["summary"] and "p95" in data["summary"]
        assert data["box_protocol"] == "ground-truth landmark box"
        assert "| all |" in (tmp_path / name / "report.md").read_text()
        for png in ("ced.png", "worst.png"):
            assert cv2.imread(str(tmp_path / name / png)) is not None
    result = compare([tmp_path / "perfect" / "metrics.json", tmp_path / "shifted" / "metrics.json"], tmp_path / "cmp")
    assert cv2.imread(str(result["png"])) is not None and result["markdown"].is_file()
    rows = [line for line in result["table"].splitlines() if line.startswith("| oracle")]
    assert len(rows) == 2 and "[perfect]" in rows[0] and "| 0.00 |" in rows[0]


@pytest.fixture
def store(tmp_path, synthetic_dataset):
    """Prepared train/val stores of the synthetic faces."""
    from facemark.data.prepare import prepare

    prepare(synthetic_dataset, tmp_path / "store", size=64, progress=False)
    return tmp_path / "store"


def test_mean_shape_and_seeded_jitter(store):
    floor = load_predictor("mean-shape", data=store / "val")  # finds the sibling train store
    assert isinstance(floor, MeanShapePredictor)
    plain = evaluate(floor, store / "val", progress=False)
    assert 0 < plain["summary"]["mean"] < 0.5
    first, again = (evaluate(floor, store, jitter=0.1, progress=False) for _ in range(2))
    assert first["per_face"] == again["per_face"] and first["per_face"] != plain["per_face"]
    assert "±10 % random edge jitter" in first["box_protocol"]


def test_cli_eval_and_compare(store, tmp_path, capsys):
    from facemark.cli import main

    assert main(["eval", "--model", "mean-shape", "--data", str(store), "--out", str(tmp_path / "a")]) == 0
    assert main(["eval", "--model", "mean-shape", "--data", str(store), "--norm", "box_diagonal",
                 "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "inter-ocular" in printed and "landmark-box diagonal" in printed and "ground-truth landmark box" in printed
    # different normalisations are not comparable: a clear error, not a misleading figure
    assert main(["eval", "--compare", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "b" / "metrics.json"),
                 "--out", str(tmp_path / "cmp")]) == 2
    assert main(["eval", "--compare", str(tmp_path / "a" / "metrics.json"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "ced.png").is_file() and "| mean shape |" in capsys.readouterr().out


def test_missing_dlib_names_the_extra(monkeypatch):
    import sys

    from facemark.baselines import DlibPredictor

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ImportError, match=r"pip install facemark\[dlib\]"):
        DlibPredictor()


class ListDetector:
    """Hands out the next prepared box list on each call (one image per face, in order)."""

    name = "list"

    def __init__(self, boxes):
        self.boxes = list(boxes)

    def detect(self, image):
        return [Detection(b, 1.0) for b in self.boxes.pop(0)]

    def landmark_box(self, box):
        return box


def test_detector_boxes_count_misses(faces):
    truth = [box_from_points(f.points) for f in faces]
    far = (0.0, 0.0, 5.0, 5.0)
    boxes = [[t] if i % 4 else ([] if i % 8 else [far]) for i, t in enumerate(truth)]  # every 4th face missed
    result = evaluate(Oracle(faces), faces, box="detector", detector=ListDetector(boxes), progress=False)
    missed = len(faces) // 4
    assert result["detection"]["found"] == len(faces) - missed
    assert result["detection"]["rate"] == pytest.approx(1 - missed / len(faces))
    assert result["summary"]["mean"] == 0 and result["summary"]["count"] == len(faces) - missed
    assert "NME over found faces" in result["normalisation_text"]


def test_each_face_keeps_the_fit_quality_its_pipeline_gave(faces):
    """A predictor with its own ``detect`` (a Landmarker) gives faces with a fit quality: each scored
    face keeps its own (what ``bench.bench_hard_faces`` ranks failures by); a box-given prediction
    has none."""
    from facemark.face import Face

    class Pipeline(Oracle):
        detector = ListDetector([])

        def detect(self, image):
            f = faces[self.calls]
            self.calls += 1
            shift = 4.0 * (self.calls % 2)  # every other face off by 4 px, with a low quality
            return [Face(box=box_from_points(f.points), points=f.points + shift, score=1.0,
                         quality=np.float32(0.2 if shift else 0.9))]

    pipeline = Pipeline(faces)
    pipeline.calls = 0
    result = evaluate(pipeline, faces, box="detector", progress=False)
    for face in result["per_face"]:
        assert type(face["quality"]) is float
        assert (face["quality"] == pytest.approx(0.2)) == (face["nme"] > 0)
    assert all(face["quality"] is None for face in evaluate(Oracle(faces), faces, progress=False)["per_face"])


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib not installed")
def test_dlib_baseline_on_real_faces(lite_root):
    from facemark.data.formats import read_pts_sample

    paths = sorted((lite_root / "lfpw" / "trainset").glob("*.pts"))[:3]
    faces = [read_pts_sample(p) for p in paths]
    result = evaluate(load_predictor("dlib"), faces, progress=False)
    assert result["evaluated"] == 3 and result["summary"]["mean"] < 0.15


def test_a_point_count_mismatch_names_the_data_and_the_model_file(synthetic_dataset, tiny_checkpoint, tmp_path):
    """A 68-point model on 5-point data skipped every face with a numpy shape message, naming no file."""
    from facemark.api import Landmarker
    from facemark.data.prepare import prepare
    from facemark.data.store import convert_stores
    from facemark.schemes import CONVERSIONS

    prepare(synthetic_dataset, tmp_path / "data", size=48, progress=False)
    convert_stores([tmp_path / "data" / "val"], tmp_path / "val5", CONVERSIONS["5pt"], progress=False)
    with pytest.raises(ValueError) as err:
        evaluate(Landmarker(tiny_checkpoint), tmp_path / "val5", progress=False)
    message = str(err.value)
    assert message.startswith(f"store {tmp_path / 'val5'}: its faces have 5 points, the model ")
    assert f"({tiny_checkpoint}) gives 68" in message and "\n" not in message


def test_eval_warns_when_the_model_was_trained_on_the_evaluated_faces(synthetic_dataset, tiny_checkpoint, tmp_path,
                                                                       capsys):
    """`facemark eval --model default --data data/300w-lite/val` printed 2.65 % with no word that the
    model had been trained on those very faces: now the console, report.md and metrics.json say how many."""
    from facemark.cli import main
    from facemark.config import load_config
    from facemark.data.prepare import prepare
    from facemark.export import export_onnx
    from facemark.train import train

    prepare(synthetic_dataset, tmp_path / "data", size=64, progress=False)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"data": str(tmp_path / "data"), "out": str(tmp_path / "run"), "model": "seed_senet",
                                  "input_size": 48, "batch_size": 8, "steps": 2, "val_every": 2, "ckpt_every": 2,
                                  "num_threads": 1}))
    train(load_config(config))
    onnx = export_onnx(tmp_path / "run" / "last.pt", tmp_path / "run.onnx")
    trained = len(json.loads((tmp_path / "data" / "train" / "index.json").read_text())["samples"])
    for model, split, seen in ((onnx, "train", trained), (tmp_path / "run" / "last.pt", "train", trained),
                               (onnx, "val", 0), (tiny_checkpoint, "train", None)):  # tiny: a file without the record
        out = tmp_path / f"eval-{model.name}-{split}"
        assert main(["eval", "--model", str(model), "--data", str(tmp_path / "data" / split), "--out", str(out),
                     "--worst-k", "0"]) == 0
        printed = capsys.readouterr().out
        result = json.loads((out / "metrics.json").read_text())
        report = (out / "report.md").read_text()
        if seen is None:
            assert result["seen_in_training"] is None
        else:
            assert result["seen_in_training"]["faces"] == seen and result["seen_in_training"]["evaluated"] == result["evaluated"]
        warning = f"{seen} of the {result['evaluated']} evaluated faces were in the model's training data"
        assert (warning in printed) == bool(seen) and (warning in report) == bool(seen), (model, split)
        assert ("training data" in printed + report) == bool(seen)


def test_a_sub_folder_of_the_training_photos_is_not_held_out_and_compare_marks_it(synthetic_dataset, faces, tmp_path):
    """`eval --data 300w-lite/afw --split all` on the shipped model said nothing where the whole folder
    warned: ids under a sub-folder (``face000_1``) differ from the training ids (``faces/face000_1``),
    so faces are matched by their photo's path under every folder above it."""
    from facemark.data.faces import face_key

    trained = {"faces": 10, "face_keys": sorted(face_key(f"faces/face{i:03d}_1") for i in range(10))}
    seen_model, fresh_model = Oracle(faces), Oracle(faces)
    seen_model.meta, fresh_model.meta = {"trained_on": trained}, {"trained_on": {"faces": 0, "face_keys": []}}
    for data in (synthetic_dataset, synthetic_dataset / "faces"):  # the whole folder and a sub-folder
        result = evaluate(seen_model, data, split="all", progress=False, out=tmp_path / data.name, worst_k=0)
        assert result["seen_in_training"]["faces"] == 10, data
        assert "WARNING: 10 of the 40 evaluated faces were in the model's training data" in result["headline"]
    evaluate(fresh_model, synthetic_dataset / "faces", split="all", progress=False, out=tmp_path / "fresh", worst_k=0)
    result = compare([tmp_path / "faces" / "metrics.json", tmp_path / "fresh" / "metrics.json"], tmp_path / "cmp")
    flagged, clean = [line for line in result["table"].splitlines() if line.startswith("| oracle")]
    assert "NOT HELD OUT" in flagged and "NOT HELD OUT" not in clean
    assert "10 of the 40 evaluated faces were in the model's training data" in result["table"]


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "300w-lite" / "afw").is_dir()
                    and not os.environ.get("FACEMARK_SHARED"), reason="needs ../shared/data/300w-lite")
def test_the_shipped_model_knows_its_training_photos_in_a_sub_folder():
    """The issue's case, without running the model: every face of ``300w-lite/afw`` (ids ``1051618982_1``)
    is in the shipped model's trained_on record (ids ``afw/1051618982_1``)."""
    from facemark.data.faces import load_faces
    from facemark.evaluate import _seen_faces
    from facemark.runtime import open_model
    from tests.conftest import LITE

    record = open_model("default").meta["trained_on"]
    faces, _, _ = load_faces(LITE / "afw", "all")
    records = [{"id": f.sample_id, "file": str(f.image_path)} for f in faces]
    assert len(_seen_faces(record, records)) == len(faces) > 300

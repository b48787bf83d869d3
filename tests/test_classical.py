"""Classical models (facemark.classical): config checks, the LBF cascade's parts, tiny ERT and LBF
training runs on synthetic faces (68 points and a 5-point subset) and on real 300w-lite faces, and
both models through Landmarker, evaluate() and the CLI."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import synthetic_face

from facemark import Landmarker
from facemark.baselines import MeanShapePredictor
from facemark.classical.lbf import LbfModel, forest_leaves, pair_points, pixel_values, similarity
from facemark.classical.train import _tree_to_heap, load_classical_config, train_classical
from facemark.cli import main
from facemark.config import ConfigError
from facemark.data.record import FaceSample
from facemark.data.store import write_store
from facemark.evaluate import evaluate
from facemark.geometry import CropRule, box_from_points, crop_box_from_box, landmark_box_in_crop, to_crop
from facemark.plots import write_image

HAS_DLIB = importlib.util.find_spec("dlib") is not None
FIVE = [36, 45, 30, 48, 54]  # outer eye corners, nose tip, mouth corners: the 5-point scheme's order
TINY = {  # seconds, not accuracy
    "ert": ["cascade_depth=3", "num_trees_per_cascade_level=20", "tree_depth=3", "oversampling=3", "nu=0.3",
            "feature_pool_size=100", "num_test_splits=5"],
    "lbf": ["radius=[0.25,0.12]", "trees=3", "tree_depth=3", "feature_pool_size=60", "oversampling=3"],
}


def _config(tmp_path, method, data, out, extra=()):
    path = tmp_path / f"{method}.yaml"
    path.write_text(f"data: {data}\nout: {out}\ninput_size: 64\ncopies: 2\nthreads: 1\n")
    return path, [*TINY[method], *extra]


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """A prepared folder of synthetic faces: 40 train, 10 val."""
    root = tmp_path_factory.mktemp("classical")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(50):
        image, points = synthetic_face(rng)
        samples.append(FaceSample(str(write_image(root / "images" / f"face{i:02d}.png", image)), points))
    write_store(samples[:40], root / "data" / "train", size=96, progress=False)
    write_store(samples[40:], root / "data" / "val", size=96, progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def real_data(tmp_path_factory, lite_root):
    """A prepared folder of real 300w-lite faces: 100 of the training split, 30 of the validation split."""
    from facemark.data.formats import read_dataset
    from facemark.data.prepare import split_samples

    train, val = split_samples(read_dataset(lite_root)[0])
    root = tmp_path_factory.mktemp("classical_real") / "data"
    write_store(train[::16][:100], root / "train", progress=False)
    write_store(val[::13][:30], root / "val", progress=False)
    return root


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("method", ["ert", "lbf"])
def test_shipped_configs_load(method):
    config = load_classical_config(method, f"configs/{method}.yaml")
    assert config.threads == 1 and not config.crop.clip


@pytest.mark.parametrize("override, words", [
    ("nu=1.5", ["nu", "1.5"]),
    ("tree_depth=ten", ["tree_depth", "ten"]),
    ("cascade_depth=0", ["cascade_depth", "0"]),
    ("feature_pool_size=2.5", ["feature_pool_size"]),
    ("crop.clip=true", ["crop.clip"]),
    ("augment.spin=3", ["augment.spin"]),
    ("trees=4", ["unknown key 'trees'"]),
])
def test_bad_ert_config_is_one_line_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_classical_config("ert", "configs/ert.yaml", [override])
    message = str(err.value)
    assert "\n" not in message and message.startswith("configs/ert.yaml: ")
    assert all(w in message for w in words), message


def test_bad_lbf_config_and_data_are_refused_before_work(tmp_path, synthetic_data):
    for override, word in (("radius=[]", "radius"), ("radius=[0.2,1.5]", "radius.1"), ("ridge=-1", "ridge"),
                           ("split_features=0", "split_features"), ("points=[1,-3]", "points.1")):
        with pytest.raises(ConfigError, match=word):
            load_classical_config("lbf", "configs/lbf.yaml", [override])
    for points, words in (("[1,2,3]", "form no point scheme"), ("[1,1,2,3,4]", "distinct"), ("[0,1,2,3,99]", "0..67")):
        with pytest.raises(ConfigError, match=words):
            train_classical("lbf", "configs/lbf.yaml", [f"data={synthetic_data}", f"points={points}",
                                                        f"out={tmp_path / 'out'}"], progress=False)
    with pytest.raises(ConfigError, match="data"):  # no stores there: refused before any crop is cut
        train_classical("lbf", "configs/lbf.yaml", [f"data={tmp_path}", f"out={tmp_path / 'out'}"], progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_reports_config_errors_on_one_line(capsys):
    assert main(["train", "--method", "ert", "--config", "configs/ert.yaml", "--set", "nu=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nu = 2" in err


# --------------------------------------------------------------------------- the shared parts


def test_landmark_box_sits_at_a_fixed_place_in_the_crop():
    rule = CropRule(clip=False)
    expected = landmark_box_in_crop(rule)
    for box in [(10.0, 20.0, 110.0, 150.0), (-40.0, 5.0, 300.0, 260.0)]:
        crop_box = crop_box_from_box(box, (100, 100), rule)
        corners = to_crop(np.array([box[:2], box[2:]]), crop_box).ravel()
        assert np.allclose(corners, expected, atol=1e-6)
    with pytest.raises(ValueError, match="unclipped"):
        landmark_box_in_crop(CropRule(clip=True))


def test_similarity_recovers_rotation_and_scale():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 1, (68, 2))
    angle, scale = 0.3, 1.4
    A = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shapes = ((mean - 0.5) @ A.T + 0.7)[None]
    assert np.allclose(similarity(mean, shapes)[0], A, atol=1e-5)


def test_heap_trees_take_the_same_path_as_sklearn():
    """The stored tree (heap layout, pixel pairs) reaches the leaf whose value sklearn predicts."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 32, 32), dtype=np.uint8)
    shapes = rng.uniform(0.3, 0.7, (30, 1, 2)).astype(np.float32)
    A = np.repeat(np.eye(2, dtype=np.float32)[None], 30, axis=0)
    pool = rng.uniform(-0.2, 0.2, (20, 2, 2)).astype(np.float32)
    values = pixel_values(grey, np.arange(30), pair_points(shapes[:, 0, None, :], A, pool[None]))
    features = values[..., 0] - values[..., 1]
    target = rng.normal(size=(30, 2))
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(features, target)
    offsets, thresholds = np.zeros((1, 1, 7, 2, 2), np.float32), np.full((1, 1, 7), np.inf, np.float32)
    _tree_to_heap(tree.tree_, pool, offsets[0, 0], thresholds[0, 0])
    leaves = forest_leaves(grey, np.arange(30), shapes, A, offsets, thresholds)[:, 0, 0]
    # same leaf <=> same prediction; and faces sharing a heap leaf share sklearn's leaf
    sk_leaf = tree.apply(features)
    for leaf in np.unique(leaves):
        assert len(np.unique(sk_leaf[leaves == leaf])) == 1
    assert len(np.unique(leaves)) == len(np.unique(sk_leaf))


# --------------------------------------------------------------------------- tiny training runs


def _train(tmp_path, method, data, name, extra=()):
    config, overrides = _config(tmp_path, method, data, tmp_path / name, extra)
    summary = train_classical(method, config, overrides, progress=False)
    return summary


@pytest.mark.parametrize("method", ["lbf", pytest.param("ert", marks=pytest.mark.skipif(not HAS_DLIB, reason="no dlib"))])
def test_tiny_training_plugs_into_landmarker_and_evaluate(tmp_path, synthetic_data, method):
    summary = _train(tmp_path, method, synthetic_data, method)
    path = summary["model"]
    lm = Landmarker(path)
    assert lm.num_points == 68 and lm.input_size == 64 and lm.meta["model_name"] == method
    assert lm.crop_rule == CropRule(clip=False) and lm.meta["training"]["faces"] == 40
    rng = np.random.default_rng(7)
    image, points = synthetic_face(rng)
    pred = lm.predict(image, box_from_points(points))
    assert pred.shape == (68, 2) and np.isfinite(pred).all()
    batch = lm.predict_batch([image, image], [[box_from_points(points)], [box_from_points(points)]])
    assert np.allclose(batch[0][0], pred, atol=1e-4) and np.allclose(batch[1][0], pred, atol=1e-4)
    # the whole evaluation path (the synthetic faces all share one shape in their box, so the
    # mean shape is already exact: the cascade must stay close to it; real faces are tested below)
    result = evaluate(lm, synthetic_data / "val", progress=False)
    assert result["evaluated"] == 10 and result["summary"]["mean"] < 0.05
    assert abs(summary["val_nme"] - result["summary"]["mean"]) < 0.02  # store crops vs original images


@pytest.mark.parametrize("method", ["lbf", pytest.param("ert", marks=pytest.mark.skipif(not HAS_DLIB, reason="no dlib"))])
def test_five_point_subset(tmp_path, synthetic_data, method):
    summary = _train(tmp_path, method, synthetic_data, f"{method}5", [f"points={FIVE}"])
    lm = Landmarker(summary["model"])
    assert lm.num_points == 5 and lm.scheme.name == "5" and lm.meta["points_from"] == FIVE
    image, points = synthetic_face(np.random.default_rng(8))
    pred = lm.predict(image, box_from_points(points))
    assert pred.shape == (5, 2)
    faces = [FaceSample(f.image_path, f.points[FIVE]) for f in _val_faces(synthetic_data)]
    assert evaluate(lm, faces, progress=False)["summary"]["mean"] < 0.1  # boxes: the tight box of the 5 points
    lm_flip = Landmarker(summary["model"], flip_test=True)  # the 5-point scheme's mirror pairs
    assert np.abs(lm_flip.predict(image, box_from_points(points)) - pred).max() < 10


def _val_faces(data):
    from facemark.data.faces import load_faces

    return load_faces(data / "val")[0]


def test_lbf_file_is_plain_arrays(tmp_path, synthetic_data):
    summary = _train(tmp_path, "lbf", synthetic_data, "lbf_file")
    with np.load(summary["model"], allow_pickle=False) as data:  # loads without pickle
        assert {"mean_shape", "offsets", "thresholds", "weights", "meta"} <= set(data.files)
        assert all(data[k].dtype != object for k in data.files)
        meta = json.loads(str(data["meta"]))
    assert meta["format"] == "facemark-lbf-1" and meta["num_points"] == 68 and meta["config"]["trees"] == 3
    model = LbfModel.load(summary["model"])
    assert model.weights.shape == (2, 68 * 3 * 8, 136)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a facemark LBF model"):
        Landmarker(bad)


@pytest.mark.skipif(not HAS_DLIB, reason="no dlib")
def test_ert_needs_its_model_card(tmp_path, synthetic_data):
    summary = _train(tmp_path, "ert", synthetic_data, "ert_card")
    card = json.loads((tmp_path / "ert_card" / "model.dat.json").read_text())
    assert card["format"] == "facemark-ert-1" and card["config"]["cascade_depth"] == 3
    assert not (tmp_path / "ert_card" / "dlib_xml").exists()  # the training crops are cleaned up
    lone = tmp_path / "lone.dat"
    lone.write_bytes((tmp_path / "ert_card" / "model.dat").read_bytes())
    with pytest.raises(FileNotFoundError, match="model card"):
        Landmarker(lone)
    assert summary["val_nme"] > 0


def test_cli_train_and_eval(tmp_path, synthetic_data, capsys):
    config, overrides = _config(tmp_path, "lbf", synthetic_data, tmp_path / "cli")
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["train", "--method", "lbf", "--config", str(config), *sets]) == 0
    assert "validation NME" in capsys.readouterr().out
    model = tmp_path / "cli" / "model.lbf.npz"
    assert main(["eval", "--model", str(model), "--data", str(synthetic_data / "val"), "--out", str(tmp_path / "ev"),
                 "--worst-k", "2"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["evaluated"] == 10 and metrics["name"] == "lbf@model.lbf"


# --------------------------------------------------------------------------- real faces


@pytest.mark.parametrize("method", ["lbf", pytest.param("ert", marks=pytest.mark.skipif(not HAS_DLIB, reason="no dlib"))])
def test_real_faces_beat_the_mean_shape(tmp_path, real_data, method):
    """100 real training faces are enough for a cascade to beat the mean shape on held-out faces."""
    summary = _train(tmp_path, method, real_data, method)
    floor = evaluate(MeanShapePredictor.from_store(real_data / "train"), real_data / "val", progress=False)
    result = evaluate(Landmarker(summary["model"]), real_data / "val", progress=False)
    assert result["summary"]["mean"] < 0.8 * floor["summary"]["mean"]

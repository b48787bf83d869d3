"""Fine-tuning from the shipped model (``train --init``) and the pre-label loop (``annotate``)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from facemark.checkpoint import load_checkpoint
from facemark.cli import main
from facemark.config import ConfigError, config_from_dict, load_config
from facemark.data.store import convert_stores
from facemark.models import create_model
from facemark.schemes import CONVERSIONS
from facemark.train import configs_that_fit, init_from_checkpoint, init_path, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT = load_checkpoint(init_path("default"))
HEAD = ("offset_x", "offset_y", "nb_x", "nb_y", "score", "mean_shape", "nb_index", "nb_merge")  # head and its buffers


def test_init_copies_every_matching_tensor():
    model = create_model(DEFAULT["model_name"], **DEFAULT["model_args"])
    report = init_from_checkpoint(model, "default")
    assert report["reinitialised"] == []
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, DEFAULT["model"][name]), name


def test_init_other_point_count_reinitialises_the_head():
    args = {**DEFAULT["model_args"], "num_points": 5}
    torch.manual_seed(0)
    model = create_model(DEFAULT["model_name"], **args)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_checkpoint(model, str(init_path("default")))  # a path works too
    state = model.state_dict()
    assert report["reinitialised"] and all(name.startswith(HEAD) for name in report["reinitialised"])
    for name in report["reinitialised"]:
        assert torch.equal(state[name], fresh[name]), name
    assert len(report["copied"]) > 10
    for name in report["copied"]:
        assert torch.equal(state[name], DEFAULT["model"][name]), name


def test_init_is_type_checked():
    with pytest.raises(ConfigError, match="init"):
        config_from_dict({"init": 5})


def test_init_of_another_architecture_is_refused_naming_the_config_that_fits():
    """A config whose backbone is not the checkpoint's (ResNet-0.5 against the shipped ResNet-0.75)
    would copy a few tensors and train as if from scratch: refused in one line, naming a config that
    builds the checkpoint's architecture; ``partial`` (config init_partial) copies what matches."""
    args = {**DEFAULT["model_args"], "width": 0.5}
    with pytest.raises(ConfigError) as err:
        init_from_checkpoint(create_model(DEFAULT["model_name"], **args), "default")
    message = str(err.value)
    assert "\n" not in message and "backbone tensors match" in message and "init_partial=true" in message
    named = re.search(r"the config that fits it: (\S+\.yaml)", message).group(1)
    config = load_config(Path(named) if Path(named).is_absolute() else REPO / named)
    assert (config.model, config.input_size) == (DEFAULT["model_name"], DEFAULT["input_size"])
    for key in ("width", "num_nb"):
        assert config.model_args[key] == DEFAULT["model_args"][key], key
    report = init_from_checkpoint(create_model(DEFAULT["model_name"], **args), "default", partial=True)
    matched, of = report["backbone"]
    assert 0 < matched <= of / 2 and report["copied"]


def test_init_with_another_head_is_not_refused():
    """Only the backbone counts: a 5-point model with 4 neighbours from the 68-point default with 10
    (as a five-point model is fine-tuned from it) copies every backbone tensor and starts the head fresh."""
    model = create_model(DEFAULT["model_name"], **{**DEFAULT["model_args"], "num_points": 5, "num_nb": 4})
    report = init_from_checkpoint(model, "default")
    assert report["backbone"][0] == report["backbone"][1] and all(k.startswith(HEAD) for k in report["reinitialised"])


def test_init_of_a_shallower_resnet_takes_each_stages_first_blocks():
    """One block per stage (the Step-18 student) from the default's two: every tensor copied, block j of
    stage i from the default's block j of stage i (features.3 = stage 2's first block = the default's
    features.4), and the copy computes what the default does with its second blocks left out."""
    model = create_model(DEFAULT["model_name"], **{**DEFAULT["model_args"], "layers": [1, 1, 1, 1]})
    report = init_from_checkpoint(model, "default")
    assert report["reinitialised"] == [] and report["backbone"][0] == report["backbone"][1]
    state = model.state_dict()
    assert torch.equal(state["backbone.features.3.conv1.0.weight"], DEFAULT["model"]["backbone.features.4.conv1.0.weight"])
    assert torch.equal(state["backbone.features.4.conv1.0.weight"], DEFAULT["model"]["backbone.features.6.conv1.0.weight"])
    teacher = create_model(DEFAULT["model_name"], **DEFAULT["model_args"])
    teacher.load_state_dict(DEFAULT["model"])
    features = teacher.backbone.features
    shallow = torch.nn.Sequential(*[features[i] for i in (0, 1, 2, 4, 6)]).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model.eval().backbone(x), shallow(x))


@pytest.mark.parametrize("layers", [[0, 1, 1, 1], [], [1.5, 1, 1, 1]])
def test_resnet_blocks_per_stage_are_checked(layers):
    with pytest.raises(ValueError, match="layers"):
        create_model(DEFAULT["model_name"], **{**DEFAULT["model_args"], "layers": layers})


def test_the_readme_fine_tunes_the_shipped_model_with_a_config_of_its_architecture():
    commands = re.findall(r"facemark train --config (\S+) --init default", (REPO / "README.md").read_text())
    assert commands
    for command in commands:
        assert REPO / command in configs_that_fit(DEFAULT), command


def _pipnet_config(small_run, out, **extra):
    shipped = {k: DEFAULT["model_args"][k] for k in ("width", "num_nb")}  # the shipped model's architecture
    values = {"model": "pipnet_resnet", "model_args": shipped, "input_size": DEFAULT["model_args"]["input_size"],
              "steps": 2, "val_every": 2, "ckpt_every": 2}
    return small_run(out, **{**values, **extra})


def _pipnet(small_run, out, tmp_path, **extra):
    return load_config(_pipnet_config(small_run, out, **extra))


def test_fine_tune_runs_and_starts_from_the_shipped_weights(small_run, tmp_path, capsys):
    config = _pipnet(small_run, "ft", tmp_path, init="default", lr=1e-12)
    train(config)
    captured = capsys.readouterr()
    assert "copied" in captured.out + captured.err and "re-initialised 0" in captured.out + captured.err
    trained = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    name = next(k for k in trained if k.endswith("weight") and not k.startswith(HEAD))
    assert torch.allclose(trained[name], DEFAULT["model"][name], atol=1e-6)


def test_fine_tune_to_five_points(small_run, tmp_path, capsys):
    for split in ("train", "val"):
        convert_stores([tmp_path / "data" / split], tmp_path / "data5" / split, CONVERSIONS["5pt"], progress=False)
    config = _pipnet_config(small_run, "ft5", data=str(tmp_path / "data5"))
    assert main(["train", "--config", str(config), "--init", "default"]) == 0
    state = load_checkpoint(tmp_path / "ft5" / "last.pt")
    assert state["model_args"]["num_points"] == 5 and state["step"] == 2
    last = capsys.readouterr().out.strip().splitlines()[-1]  # names the 5-point scheme's normaliser
    assert last.startswith("stopped at step 2") and "NME normalised by the eye-centre distance (points 0, 1)" in last
    assert "inter-ocular" not in last


def test_a_refused_init_starts_no_run(small_run, tmp_path, capsys):
    config = _pipnet_config(small_run, "narrow", model_args={"width": 0.5, "num_nb": 10})
    assert main(["train", "--config", str(config), "--init", "default"]) != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the config that fits it" in error and not (tmp_path / "narrow").exists()


# -- the pre-label loop


@pytest.fixture
def images(tmp_path):
    import cv2

    from facemark.predict import SAMPLE_IMAGE

    image = cv2.imread(str(SAMPLE_IMAGE))
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "b.png"), cv2.GaussianBlur(image, (9, 9), 4))
    cv2.imwrite(str(folder / "c.png"), image[:, ::-1])
    return [folder / "a.jpg", folder / "b.png", folder / "c.png"]


def test_annotate_xml_reads_back_lowest_quality_first(images, tmp_path):
    from facemark.annotate import annotate
    from facemark.api import Landmarker
    from facemark.data.formats import read_dlib_xml

    landmarker = Landmarker()
    faces = {str(image): landmarker.detect(str(image)) for image in images}
    result = annotate(images, landmarker, out=tmp_path / "labels.xml")
    qualities = [q for _, q in result["faces"]]
    assert len(qualities) == 3 and qualities == sorted(qualities)
    samples = read_dlib_xml(tmp_path / "labels.xml")
    assert [s.image_path for s in samples] == [image for image, _ in result["faces"]]
    for sample in samples:
        face = faces[sample.image_path][0]
        assert np.abs(sample.points - face.points).max() <= 0.5  # dlib XML: whole pixels
        assert np.abs(np.asarray(sample.box) - np.asarray(face.box)).max() <= 1.0


def test_annotate_orders_by_quality_and_keeps_corrected_pts(images):
    from facemark.annotate import annotate
    from facemark.api import Face
    from facemark.data.formats import read_pts

    rng = np.random.default_rng(0)
    quality = {"a": 0.9, "b": 0.2, "c": None}

    class Fake:
        def detect(self, image, max_faces=None):
            points = rng.uniform(20, 200, (68, 2))
            return [Face((10.0, 10.0, 210.0, 210.0), 0.9, points, quality=quality[Path(image).stem])]

    result = annotate(images, Fake(), pts=True)
    assert [Path(image).stem for image, _ in result["faces"]] == ["c", "b", "a"]
    assert len(result["written"]) == 3
    for image in images:
        points = read_pts(image.with_suffix(".pts"))
        assert points.shape == (68, 2)
    written = read_pts(images[0].with_suffix(".pts"))
    again = annotate(images, Fake(), pts=True)  # a person may have corrected them: kept
    assert again["written"] == [] and len(again["kept"]) == 3
    assert np.array_equal(read_pts(images[0].with_suffix(".pts")), written)
    assert len(annotate(images, Fake(), pts=True, overwrite=True)["written"]) == 3


def test_annotate_pts_round_trip_with_the_model(images):
    from facemark.annotate import annotate
    from facemark.api import Landmarker
    from facemark.data.formats import read_pts

    landmarker = Landmarker()
    annotate(images[:1], landmarker, pts=True)
    face = landmarker.detect(str(images[0]))[0]
    assert np.abs(read_pts(images[0].with_suffix(".pts")) - face.points).max() <= 5e-4 + 1e-4  # 3 decimals


def test_annotate_cli(images, tmp_path):
    from facemark.cli import main
    from facemark.data.formats import read_dlib_xml

    assert main(["annotate", *map(str, images), "--out", str(tmp_path / "labels.xml")]) == 0
    assert len(read_dlib_xml(tmp_path / "labels.xml")) == 3
    with pytest.raises(SystemExit):
        main(["annotate", str(images[0])])  # --out or --pts

"""Distillation (config ``teacher``): a teacher's flip-tested points become the student's targets."""

import numpy as np
import pytest
import torch

from facemark.checkpoint import load_checkpoint
from facemark.config import ConfigError
from facemark.geometry import CropRule
from facemark.schemes import get_scheme
from facemark.train import Teacher, distil_targets, init_path, train
from tests.test_finetune import _pipnet

DEFAULT = load_checkpoint(init_path("default"))


def _teacher(flip=True):
    return Teacher("default", CropRule(**DEFAULT["crop"]), 68, get_scheme(68).flip_perm, flip)


def test_the_teacher_averages_a_crop_and_its_mirror_as_the_landmarker_does():
    """The flip-tested points of the teacher equal the mean of its points on the crop and the mirrored
    points of the mirrored crop (what facemark.api's flip test does), and differ from one pass."""
    torch.manual_seed(0)
    images = torch.rand(3, 3, 128, 128)
    one = _teacher(flip=False)
    plain, mirrored = one.points(images), one.points(images.flip(-1))
    expected = (plain.numpy() + get_scheme(68).flip_normalised(mirrored.numpy())) / 2
    both = _teacher().points(images)
    np.testing.assert_allclose(both.numpy(), expected, atol=1e-5)
    assert not torch.allclose(both, plain, atol=1e-4)


def _face_crops():
    """The bundled photo's face as the training crop tensor (128 px), and the same crop shifted."""
    import cv2

    from facemark.api import Landmarker
    from facemark.data.dataset import images_to_tensor
    from facemark.predict import SAMPLE_IMAGE

    lm = Landmarker(num_threads=1)
    image = cv2.imread(str(SAMPLE_IMAGE))
    points = lm.detect(image, max_faces=1)[0].points
    box = (*points.min(0), *points.max(0))
    shifted = (box[0] + 6, box[1] + 4, box[2] + 6, box[3] + 4)
    return images_to_tensor(np.stack([lm.crop(image, box), lm.crop(image, shifted)]))


def test_the_teacher_takes_crops_of_another_input_size():
    """A student of a smaller input (96 px) gets the teacher's points for the same crops, resized."""
    images = _face_crops()
    small = torch.nn.functional.interpolate(images, size=(96, 96), mode="bilinear", antialias=True)
    teacher = _teacher()
    assert teacher.points(small).shape == (2, 68, 2)
    assert (teacher.points(small) - teacher.points(images)).abs().mean() < 0.01  # crop units


def test_targets_mix_labels_and_teacher_and_fill_missing_labels():
    labels = torch.tensor([[[0.2, 0.4], [float("nan"), float("nan")]]])
    teacher = torch.tensor([[[0.4, 0.6], [0.5, 0.5]]])
    mixed = distil_targets(labels, teacher, 0.25)
    torch.testing.assert_close(mixed, torch.tensor([[[0.25, 0.45], [0.5, 0.5]]]))


def test_a_teacher_of_another_crop_or_point_count_is_refused():
    with pytest.raises(ConfigError, match="teacher default: .* crop"):
        Teacher("default", CropRule(top=0.5), 68, get_scheme(68).flip_perm)
    with pytest.raises(ConfigError, match="68 points, the data has 5"):
        Teacher("default", CropRule(**DEFAULT["crop"]), 5, get_scheme(5).flip_perm)


def test_a_student_trains_on_the_teachers_targets_and_records_its_faces(small_run, tmp_path, capsys):
    """A run with a teacher trains (its first loss is the mixed targets', not the labels'), and the
    student's trained_on record holds the teacher's faces too (eval warns on them)."""
    config = _pipnet(small_run, "student", tmp_path, init="default", teacher="default", teacher_weight=0.5,
                     crop=dict(DEFAULT["crop"]))
    train(config)
    said = capsys.readouterr()
    assert "teacher" in said.out + said.err and "0.5 x teacher" in said.out + said.err
    state = load_checkpoint(tmp_path / "student" / "last.pt")
    assert state["step"] == 2 and state["config"]["teacher"] == "default"
    assert set(DEFAULT["trained_on"]["face_keys"]) <= set(state["trained_on"]["face_keys"])
    # its spec says it runs in one pass: the Landmarker's default, the flip test off; asked for, on
    from facemark.api import Landmarker

    assert state["flip_test"] is False and DEFAULT.get("flip_test", True) is True
    assert Landmarker(tmp_path / "student" / "last.pt").flip_test is False
    assert Landmarker(tmp_path / "student" / "last.pt", flip_test=True).flip_test is True
    assert Landmarker().flip_test is True  # the shipped model (not distilled) keeps it


def test_a_spec_flip_test_that_is_not_a_boolean_is_refused():
    from facemark.spec import check_spec_dict

    spec = {k: DEFAULT[k] for k in ("model_name", "model_args", "crop")}
    check_spec_dict({**spec, "flip_test": False}, "m.onnx")
    with pytest.raises(ValueError, match="m.onnx: model spec field 'flip_test' = 'no'"):
        check_spec_dict({**spec, "flip_test": "no"}, "m.onnx")

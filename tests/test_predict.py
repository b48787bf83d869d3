"""`facemark predict`: images, folders, videos, given boxes, smoothing, alignment and head pose."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import synthetic_face

from facemark.align import ARCFACE_TEMPLATE, align_face
from facemark.api import Landmarker
from facemark.cli import main
from facemark.detectors import detector_available
from facemark.geometry import box_from_points
from facemark.pose import MODEL_POINTS, camera_matrix, head_pose, rotation_matrix
from facemark.predict import OneEuroFilter, Smoothing, predict_paths
from facemark.schemes import get_scheme


@pytest.fixture(scope="module")
def face():
    return synthetic_face(np.random.default_rng(1), size=160)


def test_folder_with_corrupt_file_and_given_boxes(tmp_path, tiny_checkpoint, face):
    image, points = face
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "good.png"), image)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image: ignored")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"good.png": [list(box_from_points(points))]}))
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--out", str(out), "--model", str(tiny_checkpoint), "--backend", "torch",
            "--boxes", str(boxes), "--draw-box", "--indices", "--align", "--pose"]
    assert main(argv) == 0

    result = json.loads((out / "predictions.json").read_text())
    assert [e["path"] for e in result["skipped"]] == [str(folder / "broken.jpg")]
    assert "not a readable image" in result["skipped"][0]["reason"]
    (entry,) = result["images"]
    assert entry["size"] == [160, 160] and entry["output"] == str(out / "sub" / "good.png")
    (found,) = entry["faces"]
    assert np.array(found["points"]).shape == (68, 2)
    assert found["box"] == pytest.approx(list(box_from_points(points)))
    assert set(found["pose"]) == {"yaw", "pitch", "roll"}
    assert cv2.imread(str(out / "sub" / "good.png")).shape == image.shape
    assert cv2.imread(found["aligned"]).shape == (112, 112, 3)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["good.png", "good_face0.png", "predictions.json"]


def test_video_gives_annotated_video_and_frame_json(tmp_path, tiny_checkpoint, face):
    image, points = face
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 160))
    for shift in range(5):
        writer.write(np.roll(image, shift, axis=1))
    writer.release()
    lm = Landmarker(tiny_checkpoint, backend="torch")
    box = box_from_points(points)
    result = predict_paths([video], lm, tmp_path / "out", boxes=[list(box)], progress=False)

    assert result["skipped"] == [] and result["images"] == []
    (entry,) = result["videos"]
    assert entry["frames"] == 5 and entry["fps"] == pytest.approx(10.0)
    capture = cv2.VideoCapture(entry["output"])
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and capture.read()[1].shape == image.shape
    capture.release()
    frames = json.loads((tmp_path / "out" / "clip.frames.json").read_text())["frames"]
    assert [f["frame"] for f in frames] == list(range(5))
    assert all(len(f["faces"]) == 1 and f["faces"][0]["track"] == 0 for f in frames)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_one_euro_filter_cuts_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    signal = np.r_[np.zeros(60), np.full(30, 0.2)] + rng.normal(0, 0.005, 90)  # face-size units, 30 fps
    s = Smoothing()
    f = OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff)
    out = np.array([f(v, i / 30) for i, v in enumerate(signal)])
    assert out[10:60].std() < 0.6 * signal[10:60].std()
    assert np.all(np.abs(out[65:] - 0.2) < 0.02)  # caught up within 5 frames of the jump


def test_align_face_puts_the_five_points_on_the_template():
    scheme = get_scheme(68)
    angle, scale, shift = np.radians(25), 2.3, np.array([140.0, 90.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE @ rot.T + shift  # where the five points lie in the photo
    points = np.zeros((68, 2))
    ring = 3 * np.stack([np.cos(np.arange(6) / 6 * 2 * np.pi), np.sin(np.arange(6) / 6 * 2 * np.pi)], 1)
    points[list(scheme.right_eye)] = src[0] + ring  # subject's right eye = image left = template[0]
    points[list(scheme.left_eye)] = src[1] + ring
    points[scheme.nose_tip], points[list(scheme.mouth_corners)] = src[2], src[3:]
    for target, centre in zip(ARCFACE_TEMPLATE, src):
        blob = np.zeros((400, 400, 3), np.uint8)
        cv2.circle(blob, tuple(int(round(v * 16)) for v in centre), 5 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
        crop = align_face(blob, points, scheme).astype(np.float64)[..., 0]
        ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]]
        found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        assert np.abs(found - target).max() < 1.0


def _project(yaw, pitch, roll, size=(640, 480)):
    projected = (MODEL_POINTS @ rotation_matrix(yaw, pitch, roll).T + [20.0, -10.0, 1800.0]) @ camera_matrix(size).T
    points = np.zeros((68, 2))
    points[[30, 8, 36, 45, 48, 54]] = projected[:, :2] / projected[:, 2:]
    return points


def test_head_pose_frontal_and_rotated():
    assert np.abs(head_pose(_project(0, 0, 0), (640, 480))).max() < 1.0
    for angles in [(30, 0, 0), (0, 20, 0), (0, 0, -15), (-25, 15, 10)]:
        assert head_pose(_project(*angles), (640, 480)) == pytest.approx(angles, abs=3.0)
    # yaw > 0 turns the face toward the image right: the image-left half of the face looks wider
    points = _project(30, 0, 0)
    assert points[30, 0] - points[36, 0] > points[45, 0] - points[30, 0]


@pytest.mark.skipif(not detector_available("dlib-hog"), reason="dlib not installed")
def test_sample_photo_with_detector(tmp_path, tiny_checkpoint):
    out = tmp_path / "facemark-out"
    argv = ["predict", "--sample", "--out", str(out), "--model", str(tiny_checkpoint), "--backend", "torch",
            "--detector", "dlib-hog", "--max-faces", "1"]
    assert main(argv) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["images"][0]["faces"]) == 1 and result["detector"] == "dlib-hog"
    assert cv2.imread(str(out / "astronaut.jpg")).shape == (512, 512, 3)

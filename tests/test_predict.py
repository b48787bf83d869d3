"""`facemark predict`: images, folders, videos and given boxes in, drawings and JSON out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import synthetic_face

from facemark.api import Landmarker
from facemark.cli import main
from facemark.detectors import DEFAULT_DETECTOR
from facemark.geometry import box_from_points
from facemark.predict import predict_paths


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
    assert main(argv) == 1  # an input could not be used: an error unless --skip-bad accepts that
    assert main(argv + ["--skip-bad"]) == 0

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
    assert entry["frames"] == 5 and entry["faces"] == 5 and entry["fps"] == pytest.approx(10.0)
    capture = cv2.VideoCapture(entry["output"])
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and capture.read()[1].shape == image.shape
    capture.release()
    frames = json.loads((tmp_path / "out" / "clip.frames.json").read_text())["frames"]
    assert [f["frame"] for f in frames] == list(range(5))
    assert all(len(f["faces"]) == 1 and f["faces"][0]["track_id"] == 0 for f in frames)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_sample_photo_with_the_default_detector(tmp_path, tiny_checkpoint):
    out = tmp_path / "facemark-out"
    argv = ["predict", "--sample", "--out", str(out), "--model", str(tiny_checkpoint), "--backend", "torch",
            "--max-faces", "1"]
    assert main(argv) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["images"][0]["faces"]) == 1 and result["detector"] == DEFAULT_DETECTOR == "blazeface"
    assert cv2.imread(str(out / "astronaut.jpg")).shape == (512, 512, 3)


def test_skips_go_to_stderr_and_a_truncated_jpeg_is_one(tmp_path, tiny_checkpoint, face, capsys):
    """stdout stays clean for what a script reads; truncated JPEGs used to be predicted on (rc 0)."""
    image, points = face
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "boxes.json").write_text(json.dumps({"cut.jpg": [list(box_from_points(points))]}))
    argv = ["predict", str(tmp_path / "cut.jpg"), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
            "--backend", "torch", "--boxes", str(tmp_path / "boxes.json")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    skip_line = f"skipped {tmp_path / 'cut.jpg'}: "
    assert skip_line not in captured.out and skip_line in captured.err
    assert "truncated JPEG" in captured.err and "facemark: error:" in captured.err
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert result["images"] == [] and "truncated" in result["skipped"][0]["reason"]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_max_faces_below_one_is_refused(tmp_path, tiny_checkpoint, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--sample", "--model", str(tiny_checkpoint), "--max-faces", value])
    assert exit_.value.code == 2 and "--max-faces" in capsys.readouterr().err
    lm = Landmarker(tiny_checkpoint, backend="torch")
    if value != "two":
        with pytest.raises(ValueError, match="max_faces"):
            predict_paths([tmp_path], lm, tmp_path / "out", boxes={}, max_faces=int(value), progress=False)


def test_marker_size_follows_the_face_not_the_photo(face):
    """A 40 px face in a 2000 px photo: dots it can hold, not one blob (the radius used to follow the photo)."""
    from facemark.api import Face
    from facemark.predict import _Predictor

    image, points = face
    canvas = np.full((2000, 2000, 3), 60, np.uint8)
    canvas[1000:1040, 1000:1040] = cv2.resize(image, (40, 40))
    small = Face((1000.0, 1000.0, 1040.0, 1040.0), 1.0, (points * 0.25 + 1000).astype(np.float32))
    drawn = _Predictor(None, None, None, False, False, False, False).draw(canvas.copy(), [small])
    covered = (np.abs(drawn.astype(int) - canvas.astype(int)).sum(-1) > 0)[995:1045, 995:1045].mean()
    assert covered < 0.25, covered


def test_lines_draws_the_scheme_lines_between_the_points(tmp_path, tiny_checkpoint, face):
    """`--lines` joins the points along the scheme's lines: the drawing gains the line colour between points."""
    image, points = face
    cv2.imwrite(str(tmp_path / "face.png"), image)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"face.png": [list(box_from_points(points))]}))
    drawings = {}
    for flag in ([], ["--lines"]):
        out = tmp_path / ("lines" if flag else "plain")
        assert main(["predict", str(tmp_path / "face.png"), "--out", str(out), "--model", str(tiny_checkpoint),
                     "--backend", "torch", "--boxes", str(boxes), *flag]) == 0
        drawings[bool(flag)] = cv2.imread(str(out / "face.png")).astype(int)
    cyan = lambda im: (im[..., 0] > 150) & (im[..., 1] > 150) & (im[..., 2] < 100)  # noqa: E731 - BGR (255, 255, 0)
    assert cyan(drawings[True]).sum() > cyan(drawings[False]).sum() + 20

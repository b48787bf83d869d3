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
from facemark.plots import LOW_COLOR
from facemark.predict import POINT_COLOR, predict_paths
from facemark.runtime import model_digest


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
    assert found["box"] == [round(float(v), 2) for v in box_from_points(points)]  # 2 decimals, as the points
    assert set(found["pose"]) == {"yaw", "pitch", "roll"}
    assert cv2.imread(str(out / "sub" / "good.png")).shape == image.shape
    assert cv2.imread(found["aligned_file"]).shape == (112, 112, 3)  # a file: named so, not the chip itself
    assert "aligned" not in found and "aligned_png_base64" not in found
    assert found["score"] == round(found["score"], 3)  # rounded like the other fields (Face.to_dict)
    assert result["model_sha256"] == model_digest(tiny_checkpoint)  # the one model identity
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
    header, *frames = [json.loads(line) for line in (tmp_path / "out" / "clip.frames.jsonl").read_text().splitlines()]
    assert header["size"] == [160, 160] and header["fps"] == pytest.approx(10.0) and entry["frames_jsonl"].endswith(".jsonl")
    assert header["model_sha256"] == model_digest(tiny_checkpoint)
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
    drawn = _Predictor(None, None, None, False, False, False, False, legend=False).draw(canvas.copy(), [small])
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


def _photo(folder, face, name="photo.png"):
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), face[0])
    boxes = folder.parent / "boxes.json"
    boxes.write_text(json.dumps([list(box_from_points(face[1]))]))  # every image
    return folder / name, boxes


def _run(argv, tiny_checkpoint, capsys):
    code = main(["predict", *argv, "--model", str(tiny_checkpoint), "--backend", "torch"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_predict_never_writes_over_its_inputs(tmp_path, tiny_checkpoint, face, capsys):
    """`predict photo.jpg --out .` replaced photo.jpg with the annotated copy (clip.mp4 likewise)."""
    photo, boxes = _photo(tmp_path / "in", face)
    original = photo.read_bytes()
    code, err = _run([str(photo), "--out", str(photo.parent), "--boxes", str(boxes)], tiny_checkpoint, capsys)
    assert code == 2 and len(err) == 1 and "would be written over the input" in err[0] and str(photo) in err[0]
    assert photo.read_bytes() == original and not (photo.parent / "predictions.json").exists()
    video = photo.parent / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 160))
    for _ in range(3):
        writer.write(face[0])
    writer.release()
    clip = video.read_bytes()
    with pytest.raises(ValueError, match="would be written over the input"):
        predict_paths([video], Landmarker(tiny_checkpoint, backend="torch"), photo.parent, boxes=boxes, progress=False)
    assert video.read_bytes() == clip


def test_a_folder_inside_out_is_processed_and_an_empty_run_is_an_error(tmp_path, tiny_checkpoint, face, capsys):
    """`predict ph/photos --out ph` processed nothing and exited 0; so did a folder without images."""
    photo, boxes = _photo(tmp_path / "ph" / "photos", face)
    code, err = _run([str(photo.parent), "--out", str(tmp_path / "ph"), "--boxes", str(boxes)], tiny_checkpoint, capsys)
    assert code == 0 and (tmp_path / "ph" / "photo.png").is_file()
    assert len(json.loads((tmp_path / "ph" / "predictions.json").read_text())["images"]) == 1
    (tmp_path / "empty").mkdir()
    code, err = _run([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], tiny_checkpoint, capsys)
    assert code == 2 and len(err) == 1 and "no image or video files" in err[0] and str(tmp_path / "empty") in err[0]


def test_out_naming_a_file_is_refused_before_any_work(tmp_path, tiny_checkpoint, face, capsys):
    """It used to fail only after every file was processed, with a traceback."""
    photo, boxes = _photo(tmp_path / "in", face)
    (tmp_path / "taken").write_text("a file")
    code, err = _run([str(photo), "--out", str(tmp_path / "taken"), "--boxes", str(boxes)], tiny_checkpoint, capsys)
    assert code == 2 and err == [f"facemark: error: {tmp_path / 'taken'}: --out names a file; give a folder for the "
                                 "annotated files"]


@pytest.mark.parametrize("text, words", [
    ('[{"box": [30, 30, 120, 130], "score": NaN}]', "not valid JSON (NaN is not a number JSON allows)"),
    ('[{"box": [30, 30, 120, 130], "score": 1e400}]', "score must be a finite number, got inf"),
    ("[[true, 30, 120, 130]]", "a box is 4 finite numbers (x0, y0, x1, y1), got [True, 30, 120, 130]"),
    ('[{"box": [30, 30, 120, 130], "score": "high"}]', "score must be a finite number, got 'high'"),
], ids=["nan-score", "1e400-score", "bool-coordinate", "string-score"])
def test_boxes_files_are_checked_for_types_and_finite_values(tmp_path, tiny_checkpoint, face, capsys, text, words):
    """`"score": NaN` or `1e400` wrote NaN/Infinity into predictions.json (not JSON); `[[true, 2, 3, 4]]` was a box."""
    photo, boxes = _photo(tmp_path / "in", face)
    boxes.write_text(text)
    code, err = _run([str(photo), "--out", str(tmp_path / "out"), "--boxes", str(boxes)], tiny_checkpoint, capsys)
    assert code == 2 and len(err) == 1 and words in err[0] and str(boxes) in err[0]


def test_a_box_far_outside_the_image_is_a_one_line_skip(tmp_path, tiny_checkpoint, face, capsys):
    """A 1e9 box ended in OpenCV's `circle` error; the result JSON stays strict JSON."""
    photo, boxes = _photo(tmp_path / "in", face)
    boxes.write_text("[[0, 0, 1e9, 1e9]]")
    code, err = _run([str(photo), "--out", str(tmp_path / "out"), "--boxes", str(boxes)], tiny_checkpoint, capsys)
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert code == 1 and result["images"] == []
    assert "reaches more than 1x the image size outside the 160x160 image" in result["skipped"][0]["reason"]


def test_video_frames_stream_to_json_lines(tmp_path, tiny_checkpoint, face, monkeypatch):
    """Video results were held in memory (~41 KB per face per frame) and nothing was written if the run
    died: each frame's line is on disk before the next frame, and a run that dies keeps them."""
    from facemark.predict import _Predictor

    image, points = face
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 160))
    for shift in range(6):
        writer.write(np.roll(image, shift, axis=1))
    writer.release()
    partial = tmp_path / "out" / "clip.frames.jsonl.partial"
    seen, draw = [], _Predictor.draw

    def draw_and_look(self, frame, faces):
        seen.append(len(partial.read_text().splitlines()))  # the header and every frame before this one
        if len(seen) == 5:
            raise RuntimeError("the run dies at frame 4")
        return draw(self, frame, faces)

    monkeypatch.setattr(_Predictor, "draw", draw_and_look)
    lm = Landmarker(tiny_checkpoint, backend="torch")
    result = predict_paths([video], lm, tmp_path / "out", boxes=[list(box_from_points(points))], progress=False)
    assert seen == [1, 2, 3, 4, 5] and "dies at frame 4" in result["skipped"][0]["reason"]
    header, *frames = [json.loads(line) for line in partial.read_text().splitlines()]
    assert header["path"] == str(video) and [f["frame"] for f in frames] == [0, 1, 2, 3]
    assert not (tmp_path / "out" / "clip.mp4").exists() and not (tmp_path / "out" / "clip.frames.jsonl").exists()


def test_a_pose_that_cannot_be_had_is_null_in_the_json_and_said_once(tmp_path, tiny_checkpoint, face, capsys):
    """A scheme that names no pose points: every face gets ``"pose": null`` and the reason, and
    stderr says it once, not once per face."""
    import yaml

    from facemark.schemes import get_scheme, scheme_to_dict

    image, points = face
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), image)
    scheme = scheme_to_dict(get_scheme(68))
    del scheme["pose"]
    (tmp_path / "nopose.yaml").write_text(yaml.safe_dump(scheme | {"name": "nopose"}))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({name: [list(box_from_points(points))] for name in ("a.png", "b.png")}))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(out), "--model",
                 str(tiny_checkpoint), "--backend", "torch", "--boxes", str(boxes), "--pose",
                 "--scheme", str(tmp_path / "nopose.yaml")]) == 0
    faces = [f for entry in json.loads((out / "predictions.json").read_text())["images"] for f in entry["faces"]]
    assert len(faces) == 2
    assert all(f["pose"] is None and "'nopose' has no pose points" in f["pose_reason"] for f in faces)
    assert capsys.readouterr().err.count("no pose points") == 1


def test_drawings_carry_a_legend_of_their_marks(tmp_path, face):
    """Each annotated image explains itself: a key in its lower left corner to the green dots and, for a
    model that scores its points, the red rings of unsure points; ``--no-legend`` leaves it out."""
    image, points = face
    photo = np.full((400, 400, 3), 235, np.uint8)  # a light photo: the key must still read on it
    photo[120:280, 120:280] = image
    cv2.imwrite(str(tmp_path / "face.png"), photo)
    boxes = {"face.png": [list(box_from_points(points + 120))]}
    lm = Landmarker("default")
    drawn = {}
    for legend in (True, False):
        predict_paths([tmp_path / "face.png"], lm, tmp_path / f"out{legend}", boxes=boxes, legend=legend, progress=False)
        drawn[legend] = cv2.imread(str(tmp_path / f"out{legend}" / "face.png")).astype(int)
    changed = np.abs(drawn[True] - drawn[False]).sum(-1) > 0
    rows, cols = np.nonzero(changed)
    assert rows.min() > 300 and cols.max() < 250  # only the lower left corner differs
    corner = drawn[True][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert np.median(corner) < 100  # on a dark box
    green = (corner[..., 1] > 200) & (corner[..., 0] < 80) & (corner[..., 2] < 80)
    red = (corner[..., 2] > 200) & (corner[..., 0] < 80) & (corner[..., 1] < 80)
    assert green.any() and red.any() and POINT_COLOR == (0, 255, 0) and LOW_COLOR == (0, 0, 255)
    assert main(["predict", str(tmp_path / "face.png"), "--out", str(tmp_path / "cli"), "--no-legend"]) == 0
    assert np.abs(cv2.imread(str(tmp_path / "cli" / "face.png")).astype(int)[300:, :250]
                  - photo[300:, :250]).max() == 0  # detected, not given boxes: the corner is the photo's

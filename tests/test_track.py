"""facemark.track: following faces from frame to frame, and Landmarker.track on
synthetic clips with known points (facemark.clips.make_clip), one of them through a video file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facemark.api import Face, Landmarker
from facemark.clips import make_clip
from facemark.metrics import nmf
from facemark.placement import Steadiness
from facemark.predict import SAMPLE_IMAGE, predict_paths
from facemark.track import FaceTracker, Smoothing, VideoTracker, track_lost
from tests.conftest import count_crops


def _face(x0: float, y0: float, size: float = 100.0) -> Face:
    points = np.stack(np.meshgrid(np.linspace(x0, x0 + size, 17), np.linspace(y0, y0 + size, 4)), -1).reshape(-1, 2)[:68]
    return Face((x0, y0, x0 + size, y0 + size), 1.0, points.astype(np.float32))


def test_tracker_keeps_ids_starts_new_tracks_and_drops_lost_ones():
    tracker = FaceTracker(Smoothing(max_missed=1))
    first = tracker.update([_face(0, 0), _face(300, 0)], 0.0)
    assert [f.track_id for f in first] == [0, 1]
    moved = tracker.update([_face(305, 2), _face(3, 1)], 0.1)  # order swapped, both moved a little
    assert [f.track_id for f in moved] == [1, 0]
    assert moved[0].to_dict()["track_id"] == 1 and moved[0].track == 1  # the former name still reads
    # smoothing: a small move is damped, the face does not jump all the way at once
    assert 300 < moved[0].points[0, 0] < 305
    for t in (0.2, 0.3):  # face 1 unseen for two frames: dropped (max_missed=1)
        tracker.update([_face(3, 1)], t)
    assert tracker.update([_face(300, 0), _face(3, 1)], 0.4)[0].track_id == 2  # back: a fresh track


# --------------------------------------------------------------------------- Landmarker.track on a clip


@pytest.fixture(scope="module")
def landmarker():
    return Landmarker(num_threads=1)


@pytest.fixture(scope="module")
def photo(landmarker):
    """The bundled photo and its points (the shipped model's: the clips' known points)."""
    image = cv2.imread(str(SAMPLE_IMAGE))
    return image, landmarker.detect(image, max_faces=1)[0].points


def _write_clip(path, frames, fps=30.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _read_clip(path):
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    while ok:
        yield frame
        ok, frame = capture.read()
    capture.release()


def _spy_on_detector(monkeypatch, landmarker, frames):
    """(frames that count themselves as they are read, indices of the frames the detector ran on)."""
    seen, calls = [], []
    detect = landmarker.detector.detect
    monkeypatch.setattr(landmarker.detector, "detect", lambda image, *a, **k: calls.append(len(seen) - 1) or detect(image, *a, **k))

    def counted():
        for frame in frames:
            seen.append(1)
            yield frame

    return counted(), calls


def test_track_keeps_one_id_and_runs_the_detector_every_k_frames(tmp_path, monkeypatch, landmarker, photo):
    frames, truth = make_clip(*photo, frames=23, kind="moving", seed=1)
    video = _write_clip(tmp_path / "clip.mp4", frames)  # through a real video file and reader
    stream, calls = _spy_on_detector(monkeypatch, landmarker, _read_clip(video))
    tracker = VideoTracker(landmarker, every=5, smoothing=False)
    result = list(tracker.run(stream))
    assert len(result) == 23 and all(len(faces) == 1 for faces in result)
    assert {faces[0].track_id for faces in result} == {0}
    assert calls == [0, 5, 10, 15, 20] and (tracker.frames, tracker.detector_frames) == (23, 5)
    points = np.stack([faces[0].points for faces in result])
    assert np.abs(points - truth).mean() < 0.05 * np.linalg.norm(truth[0, 45] - truth[0, 36])  # follows the motion
    # the public method gives the same raw points
    again = list(landmarker.track(_read_clip(video), every=5, smoothing=False))
    np.testing.assert_allclose(np.stack([faces[0].points for faces in again]), points, atol=1e-3)


def test_a_new_face_is_picked_up_at_the_next_detector_frame(landmarker, photo):
    left, _ = make_clip(*photo, frames=14, kind="still", seed=2, face_size=120, size=(320, 480))
    right, _ = make_clip(*photo, frames=14, kind="still", seed=3, face_size=120, size=(320, 480))
    blank = np.full_like(right[0], 128)
    frames = [np.hstack([a, b if i >= 7 else blank]) for i, (a, b) in enumerate(zip(left, right))]
    ids = [sorted(face.track_id for face in faces) for faces in landmarker.track(frames, every=5)]
    assert ids[:10] == [[0]] * 10  # the second face appears at frame 7: unseen until the detector runs
    assert ids[10:] == [[0, 1]] * 4


def test_smoothing_cuts_jitter_on_a_still_clip(landmarker, photo):
    frames, truth = make_clip(*photo, frames=20, kind="still", seed=4, noise=6.0, jpeg=60)
    raw = np.stack([faces[0].points for faces in landmarker.track(frames, every=5, smoothing=False)])
    smooth = np.stack([faces[0].points for faces in landmarker.track(frames, every=5)])
    assert nmf(smooth, truth) < 0.6 * nmf(raw, truth)


def test_a_track_is_lost_when_its_points_leave_the_frame_or_its_quality_drops():
    face = _face(10, 10, 80)
    assert not track_lost(face, (200, 200))
    assert track_lost(_face(150, 10, 100), (200, 200))  # half its points beyond the right edge
    assert track_lost(_face(10, 10, 4), (200, 200))  # shrunk to nothing
    face.quality = 0.1  # Face.quality, where the model gives one
    assert track_lost(face, (200, 200))


def test_track_rejects_a_bad_detector_period(landmarker):
    with pytest.raises(ValueError, match="every"):
        list(landmarker.track([], every=0))
    with pytest.raises(ValueError, match="steady"):
        list(landmarker.track([], steady="yes"))
    for bad in ({"beta": -1.0}, {"min_cutoff": 0.0}, {"d_cutoff": float("nan")}, {"min_iou": 2.0}, {"max_missed": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Smoothing(**bad)
    with pytest.raises(ValueError, match="Steadiness.beta"):
        Steadiness(beta=float("inf"))


def test_predict_on_a_video_tracks_its_faces(tmp_path, landmarker, photo):
    frames, _ = make_clip(*photo, frames=12, kind="moving", seed=5)
    video = _write_clip(tmp_path / "clip.mp4", frames)
    result = predict_paths([video], landmarker, tmp_path / "out", progress=False)
    (entry,) = result["videos"]
    assert entry["frames"] == 12 and entry["faces"] == 12
    saved = [json.loads(line) for line in (tmp_path / "out" / "clip.frames.jsonl").read_text().splitlines()][1:]
    assert [f["faces"][0]["track_id"] for f in saved] == [0] * 12


def test_tracking_keeps_a_strongly_tilted_head_upright(lite_root):
    """Tracked frames crop a tilted head turned upright, as detect() does: a face turned 70
    degrees keeps its accuracy frame after frame."""
    from facemark.data.formats import read_pts
    from facemark.geometry import rotate_face
    from facemark.metrics import nme

    image = cv2.imread(str(lite_root / "afw" / "134212_1.jpg"))
    turned, truth, _ = rotate_face(image, read_pts(lite_root / "afw" / "134212_1.pts"), 70.0)
    frames = list(Landmarker().track([turned] * 4, every=10, smoothing=False))
    assert [len(faces) for faces in frames] == [1, 1, 1, 1]
    errors = [nme(faces[0].points[None], truth[None], "inter_ocular")[0] for faces in frames]
    assert max(errors) < 0.05, errors


def test_a_tracked_frame_costs_one_crop_per_face(monkeypatch, landmarker, photo):
    """Between detector frames each face is cut once, where its previous points place it, and run
    once (no flip test unless asked): tracking is the cheap path."""
    frames, _ = make_clip(*photo, frames=6, kind="still", seed=4)
    batches = count_crops(monkeypatch, landmarker)
    assert landmarker.flip_test  # the shipped model's own setting: the crop and its mirror, in one call
    for flip, crops in ((False, [1]), (True, [2]), (None, [2])):
        tracker = VideoTracker(landmarker, every=6, smoothing=False, flip=flip)
        tracker.push(frames[0])  # the detector frame
        for frame in frames[1:]:
            batches.clear()
            assert len(tracker.push(frame)) == 1
            assert batches == crops, (flip, batches)
        assert tracker.detector_frames == 1


def test_a_detector_frame_checks_the_faces_in_hand_without_placing_them_again(monkeypatch, landmarker, photo):
    """On a detector frame a face the detector finds where a track is continues that track: the
    detector runs, then one crop per face where the track places it (a full detect would add a
    placing pass and jump to the detector's crop). A face the detector finds that no track holds
    takes the full detect."""
    frames, _ = make_clip(*photo, frames=30, kind="moving", seed=6)
    batches = count_crops(monkeypatch, landmarker)
    stream, calls = _spy_on_detector(monkeypatch, landmarker, frames[:8])
    tracker = VideoTracker(landmarker, every=4, smoothing=False, flip=False)
    per_frame = []
    for frame in stream:
        batches.clear()
        faces = tracker.push(frame)
        per_frame.append(list(batches))
        assert len(faces) == 1 and faces[0].track_id == 0
    assert calls == [0, 4] and tracker.detector_frames == 2
    assert per_frame[4] == [1] and all(per_frame[i] == [1] for i in (1, 2, 3, 5, 6, 7))
    assert sum(per_frame[0]) >= 2  # the first frame: detect()'s own passes (flip test, placement check)


def test_a_face_at_rest_keeps_its_crop(monkeypatch, landmarker, photo):
    """A still face's crop barely moves from frame to frame (its SteadyPlacement), where a crop
    exactly where the previous points place it shakes with their noise and feeds it back. Pooled
    over five clips: one clip's ratio ranges 0.3-0.66 with the model's noise."""
    clips = [make_clip(*photo, frames=30, kind="still", seed=seed)[0] for seed in range(7, 12)]
    detect, crops = landmarker.detect, []

    def spy(image, *args, boxes=None, **kw):
        if boxes is not None:
            crops.append([(b["box"][0] + b["box"][2]) / 2 for b in boxes] + [b["roll"] for b in boxes])
        return detect(image, *args, boxes=boxes, **kw)

    monkeypatch.setattr(landmarker, "detect", spy)
    shake = {}
    for steady in (True, False):
        moves = []
        for frames in clips:
            crops.clear()
            list(VideoTracker(landmarker, every=100, smoothing=False, flip=False, steady=steady).run(frames))
            moves.append(np.abs(np.diff(np.array(crops[5:]), axis=0)))
        shake[steady] = np.concatenate(moves).mean(axis=0)  # centre x, roll
    assert np.all(shake[True] < 0.6 * shake[False]), shake


def test_fresh_detector_scores_keep_each_face_on_its_own_points(monkeypatch, landmarker, photo):
    """Two faces whose detector scores swap order from one detector frame to the next: each track
    keeps its own face's points and box, and each frame's faces come highest score first."""
    from dataclasses import replace as with_

    left, _ = make_clip(*photo, frames=13, kind="still", seed=2, face_size=120, size=(320, 480))
    right, _ = make_clip(*photo, frames=13, kind="still", seed=3, face_size=120, size=(320, 480))
    frames = [np.hstack([a, b]) for a, b in zip(left, right)]
    detect, calls = landmarker.detector.detect, []

    def swapping(image, *args, **kw):  # the left face scores higher on every other detector frame
        calls.append(1)
        flip = len(calls) % 2
        return sorted((with_(d, score=0.9 - 0.4 * ((d.box[0] < 320) == flip)) for d in detect(image, *args, **kw)),
                      key=lambda d: -d.score)

    monkeypatch.setattr(landmarker.detector, "detect", swapping)
    side = {}
    for faces in VideoTracker(landmarker, every=4, smoothing=False).run(frames):
        assert len(faces) == 2 and [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        for face in faces:
            x = float(np.mean(face.points[:, 0]))
            assert side.setdefault(face.track_id, x < 320) == (x < 320)  # a track stays on its face
            assert face.box[0] < x < face.box[2]  # and its box on its points
    assert len(calls) >= 3 and sorted(side) == [0, 1]

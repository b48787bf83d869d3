"""facemark.track: the One-Euro filter and following faces from frame to frame."""

from __future__ import annotations

import numpy as np

from facemark.api import Face
from facemark.track import FaceTracker, OneEuroFilter, Smoothing


def test_one_euro_filter_cuts_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    signal = np.r_[np.zeros(60), np.full(30, 0.2)] + rng.normal(0, 0.005, 90)  # face-size units, 30 fps
    s = Smoothing()
    f = OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff)
    out = np.array([f(v, i / 30) for i, v in enumerate(signal)])
    assert out[10:60].std() < 0.6 * signal[10:60].std()
    assert np.all(np.abs(out[65:] - 0.2) < 0.02)  # caught up within 5 frames of the jump


def _face(x0: float, y0: float, size: float = 100.0) -> Face:
    points = np.stack(np.meshgrid(np.linspace(x0, x0 + size, 17), np.linspace(y0, y0 + size, 4)), -1).reshape(-1, 2)[:68]
    return Face((x0, y0, x0 + size, y0 + size), 1.0, points.astype(np.float32))


def test_tracker_keeps_ids_starts_new_tracks_and_drops_lost_ones():
    tracker = FaceTracker(Smoothing(max_missed=1))
    first = tracker.update([_face(0, 0), _face(300, 0)], 0.0)
    assert [f.track for f in first] == [0, 1]
    moved = tracker.update([_face(305, 2), _face(3, 1)], 0.1)  # order swapped, both moved a little
    assert [f.track for f in moved] == [1, 0]
    assert moved[0].to_dict()["track"] == 1
    # smoothing: a small move is damped, the face does not jump all the way at once
    assert 300 < moved[0].points[0, 0] < 305
    for t in (0.2, 0.3):  # face 1 unseen for two frames: dropped (max_missed=1)
        tracker.update([_face(3, 1)], t)
    assert tracker.update([_face(300, 0), _face(3, 1)], 0.4)[0].track == 2  # back: a fresh track

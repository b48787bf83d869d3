"""facemark.filters: the One-Euro filter."""

from __future__ import annotations

import numpy as np

from facemark.filters import OneEuroFilter


def test_one_euro_filter_cuts_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    # face-size units at 30 fps: 0.5 px of jitter on a 170 px face, then a jump of 20 % of the face
    signal = np.r_[np.zeros(60), np.full(30, 0.2)] + rng.normal(0, 0.003, 90)
    f = OneEuroFilter(min_cutoff=0.3, beta=100.0, d_cutoff=1.0)
    out = np.array([f(v, i / 30) for i, v in enumerate(signal)])
    assert np.diff(out[10:60]).std() < 0.4 * np.diff(signal[10:60]).std()  # frame-to-frame flicker
    assert np.all(np.abs(out[62:] - 0.2) < 0.01)  # caught up within 2 frames of the jump

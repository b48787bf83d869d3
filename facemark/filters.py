"""The One-Euro filter: smoothing a noisy signal with little lag (Casiez, Roussel and Vogel, CHI 2012).

What :mod:`facemark.track` smooths a face's points with, and :mod:`facemark.placement` a tracked
face's crop.
"""

from __future__ import annotations

import math

import numpy as np


class OneEuroFilter:
    """The One-Euro filter (Casiez et al. 2012) on arrays, each element filtered independently.

    An exponential low-pass whose cutoff rises with the signal's speed: at rest it smooths hard
    (``min_cutoff``, Hz; lower = less jitter but more lag), when the signal moves the cutoff grows by
    ``beta`` x speed (higher = less lag on fast motion). ``d_cutoff`` (Hz) smooths the speed estimate.
    Speeds are in the signal's units per second, so ``beta`` depends on the units.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(dt: float, cutoff) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filtered value of sample ``x`` taken at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = max(float(t) - self.t, 1e-6)
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(dt, self.d_cutoff) * (dx - self.dx)
        alpha = self._alpha(dt, self.min_cutoff + self.beta * np.abs(self.dx))
        self.x, self.t = self.x + alpha * (x - self.x), float(t)
        return self.x.copy()


def check_filter_settings(settings) -> None:
    """One-Euro settings must be finite numbers: ``min_cutoff`` and ``d_cutoff`` > 0, ``beta`` >= 0."""
    for name, low in (("min_cutoff", 0.0), ("beta", None), ("d_cutoff", 0.0)):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (value <= low if low is not None else value < 0):
            raise ValueError(f"{type(settings).__name__}.{name} must be a finite number "
                             f"{'> 0' if low is not None else '>= 0'}, got {value!r}")

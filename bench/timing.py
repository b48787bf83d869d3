"""Timing shared by the benchmark scripts (``from bench.timing import median_ms``; scripts run as ``python -m bench.<script>``)."""

from __future__ import annotations

import random
import statistics
import time


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def best_ms(fn, repeats: int) -> float:
    """Fastest wall time of ``fn()`` in milliseconds over ``repeats`` calls (the least disturbed one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def taking_turns(labels: list, count: int, seed: int = 0) -> list[list]:
    """The order in which pipelines ``labels`` run each of ``count`` photos: a seeded shuffle per
    photo, so that each pipeline follows each other about equally often. (A fixed order, even
    rotated photo by photo, keeps who follows whom: in bench_end_to_end the default's row, always
    right after dlib's, measured 0.3-0.4 ms a photo slower than the identical ``flip_test=True`` row
    one place later, in three runs.)"""
    rng = random.Random(seed)
    return [rng.sample(labels, len(labels)) for _ in range(count)]

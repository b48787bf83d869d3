"""``facemark bulk --engine local``: this process, no Ray.

``workers`` model copies run in threads (ONNX Runtime releases the GIL) while other threads read
and decode the next batches; at most ``workers + 1`` batches of decoded photos are held at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue

from facemark.api import Landmarker
from facemark.bulk import rows


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_local(todo: list[str], report: Callable, first: Landmarker, make: Callable[[], Landmarker], workers: int,
              batch_size: int, max_pixels: int, max_bytes: int | None) -> None:
    """``workers`` Landmarkers in threads, each batch read and decoded in another thread ahead of it;
    each batch's image rows go to ``report`` in order."""
    landmarkers = SimpleQueue()  # idle model copies; the others are built by the threads that need them
    landmarkers.put(first)
    cwd = os.getcwd()

    def decode(paths):
        return [rows.load(path, cwd=cwd, max_pixels=max_pixels, max_bytes=max_bytes) for path in paths]

    def detect(paths, decoded):
        images, errors = zip(*decoded.result())
        try:
            landmarker = landmarkers.get_nowait()
        except Empty:  # at most `workers` threads ask at once, so at most `workers` copies
            landmarker = make()
        try:
            return rows.image_table(landmarker, paths, images, errors)
        finally:
            landmarkers.put(landmarker)

    todo_batches = batches(todo, batch_size)
    with ThreadPoolExecutor(workers, "facemark-decode") as readers, \
            ThreadPoolExecutor(workers, "facemark-model") as models:
        pending: deque = deque()

        def submit() -> None:
            paths = next(todo_batches, None)
            if paths is not None:
                pending.append(models.submit(detect, paths, readers.submit(decode, paths)))

        for _ in range(workers + 1):  # in flight: one batch per model thread and one more, decoded ahead
            submit()
        try:
            while pending:
                report(pending.popleft().result())
                submit()
        finally:  # stopped (Ctrl-C, a write error): batches not started are dropped, running ones finish
            for future in pending:
                future.cancel()

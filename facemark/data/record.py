"""The one record every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.reason = message


@dataclass
class FaceSample:
    """One annotated face.

    ``points`` are float32 ``(N, 2)`` in 0-based pixel-centre coordinates of ``image_path``;
    ``visible`` is an optional bool ``(N,)`` (False = occluded); ``box`` an optional face box
    ``(x0, y0, x1, y1)`` that came with the annotation (WFLW, dlib XML).
    """

    image_path: str
    points: np.ndarray
    dataset: str = ""
    subset: str = ""
    sample_id: str = ""
    visible: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    attributes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32)
        if self.visible is not None:
            self.visible = np.asarray(self.visible, dtype=bool)
        if not self.sample_id:
            self.sample_id = Path(self.image_path).stem


def check_points(points: np.ndarray, path: str | Path, expected: int | None = None, line: int | None = None) -> np.ndarray:
    """Validate an ``(N, 2)`` point array, raising :class:`DataError` naming ``path``."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise DataError(path, f"expected points of shape (N, 2), got {points.shape}", line)
    if expected is not None and len(points) != expected:
        raise DataError(path, f"expected {expected} points, found {len(points)}", line)
    if not np.isfinite(points).all():
        raise DataError(path, "points contain NaN or infinite values", line)
    return points.astype(np.float32)

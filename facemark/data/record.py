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


#: how far outside its image a point may lie, as a fraction of the image's width (x) or height (y):
#: faces cut by the border have points beyond it, but a point further out than this is a typo
#: or a broken file, not a face
OUTSIDE_MARGIN = 1.0


def check_points(points: np.ndarray, path: str | Path, expected: int | None = None, line: int | None = None,
                 image_size: tuple[int, int] | None = None, lines: list[int] | None = None) -> np.ndarray:
    """Validate an ``(N, 2)`` point array and return it as float32, raising :class:`DataError` naming ``path``.

    Values are checked after the cast to float32 (``1e39`` is finite in float64, ``inf`` in
    float32). With ``image_size = (width, height)`` a point more than :data:`OUTSIDE_MARGIN` of the
    image's size outside it is refused. ``lines`` (one per point) names the offending point's line.

    A point whose x and y are both NaN is *missing* (partial labels): it is kept as NaN, its loss is
    masked in training and it is left out of NME. A single NaN coordinate, infinity, values beyond
    float32 and a face with every point missing are refused.
    """
    try:
        points = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, "points are not numbers", line) from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise DataError(path, f"expected points of shape (N, 2), got {points.shape}", line)
    if expected is not None and len(points) != expected:
        raise DataError(path, f"expected {expected} points, found {len(points)}", line)
    with np.errstate(over="ignore", invalid="ignore"):
        points32 = points.astype(np.float32)
    missing = np.isnan(points).all(axis=1)  # a missing point: both coordinates NaN (see missing_points)
    if len(points) and missing.all():
        raise DataError(path, "every point is missing (NaN)", line)
    bad = ~np.isfinite(points32).all(axis=1) & ~missing
    if image_size is not None and not bad.any():
        size = np.asarray(image_size, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ((points < -OUTSIDE_MARGIN * size) | (points > (1 + OUTSIDE_MARGIN) * size)).any(axis=1)
        what = f"lies more than {OUTSIDE_MARGIN:g}x the image size outside the {image_size[0]}x{image_size[1]} image"
    else:
        what = "is NaN (in one coordinate only), infinite or beyond the float32 range"
    if bad.any():
        i = int(np.argmax(bad))
        where = lines[i] if lines is not None else line
        raise DataError(path, f"point {i} ({points[i, 0]:.6g}, {points[i, 1]:.6g}) {what}", where)
    return points32


def missing_points(points) -> np.ndarray:
    """Bool ``(..., K)``: True where a point is missing (NaN), for numpy arrays or torch tensors."""
    if hasattr(points, "isnan") and not isinstance(points, np.ndarray):  # torch
        return points.isnan().any(dim=-1)
    return np.isnan(np.asarray(points, dtype=np.float64)).any(axis=-1)

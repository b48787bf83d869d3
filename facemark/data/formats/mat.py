"""300W-LP and AFLW2000-3D ``.mat`` annotations (MATLAB v5, one face per file, image beside it).

Coordinates are 1-based (MATLAB) and are converted to 0-based pixel centres by subtracting 1.
Both sets come from Zhu et al.'s MATLAB face-profiling / 3DDFA code, which maps the fitted 3D
model into the image with ``y = height + 1 - y``, the 1-based flip (0-based would be
``height - 1 - y``); 3DDFA's python port keeps that ``+ 1``. The ``roi`` field is a MATLAB
index range too: in 300W-LP ``IBUG_image_008_1_0`` the photo's borders (black padding) sit where
an inclusive ``roi`` of 586 pixels (``638 - 53 + 1``) scaled to 450 puts them, not 585. 300W-LP's
``pt2d`` derives from the 300-W annotations, themselves 1-based. Many python projects use these
numbers unchanged (a 1-pixel bias). Drawing the points cannot settle a 1-pixel question: the
annotation noise is larger than that.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.formats.pts import find_image, image_size_of
from facemark.data.record import DataError, FaceSample, check_points
from facemark.extras import require


@reader
def read_mat_300wlp(path: str | Path) -> FaceSample:
    """Read ``pt3d_68`` (3x68, rows x, y, z) or else ``pt2d`` when it is 2x68.

    ``pt3d_68`` wins because in AFLW2000-3D ``pt2d`` is the 21-point AFLW markup, while 300W-LP
    files carry only ``pt2d`` (68 points). Points far outside the image beside it are refused.
    """
    path = Path(path)
    h5py, matlab = require("h5py", "reading .mat annotations"), require("scipy.io", "reading .mat annotations")
    if h5py.is_hdf5(path):
        raise DataError(path, "MATLAB v7.3 (HDF5) file, not a 300W-LP/AFLW2000-3D annotation")
    try:
        mat = matlab.loadmat(path, variable_names=("pt3d_68", "pt2d"))
    except (matlab.matlab.MatReadError, ValueError, OSError, NotImplementedError, zlib.error) as e:
        raise DataError(path, f"cannot read .mat file: {e}") from None
    raw = mat.get("pt3d_68")
    if raw is None or raw.ndim != 2 or raw.shape[0] < 2 or raw.shape[1] != 68:
        raw = mat.get("pt2d")
        if raw is None or raw.shape != (2, 68):
            shape = "missing" if raw is None else "x".join(map(str, raw.shape))
            raise DataError(path, f"no 68-point landmarks: no 3x68 pt3d_68, and pt2d is {shape}")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise DataError(path, f"landmarks hold {raw.dtype} values, not real numbers")
    image = find_image(path)
    points = check_points(raw[:2].T.astype(np.float64) - 1.0, path, 68, image_size=image_size_of(image))
    return FaceSample(str(image), points)

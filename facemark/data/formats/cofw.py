"""COFW ``.mat`` files (MATLAB v7.3 = HDF5), which embed the images themselves.

MATLAB writes arrays column-major, so HDF5 sees every array transposed: the ``n x 87`` ``phis``
matrix arrives as ``87 x n`` and an ``h x w x 3`` image as ``3 x w x h``; the cell array of
images is an HDF5 dataset of object references.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.record import DataError, FaceSample, check_points
from facemark.extras import require
from facemark.files import write_atomic
from facemark.images import ImageError, check_pixels

_NUM_POINTS = 29
MAX_FACES = 1_000_000  # far above COFW's 1852: a file declaring more is not COFW
_SPLITS = (("IsTr", "phisTr", "train"), ("IsT", "phisT", "test"))


@reader
def read_cofw_mat(path: str | Path, image_dir: str | Path) -> list[FaceSample]:
    """Extract the images to ``image_dir/<subset>_<nnnn>.png`` and return their samples.

    Every later stage works from image files, so the embedded images are written out (as PNG,
    lossless). Names depend only on the split and index: use one ``image_dir`` per COFW variant
    (grey / colour). ``phis`` rows hold 29 x, 29 y (1-based MATLAB pixels) and 29 occlusion flags
    (1 = occluded); points far outside their image are refused.
    """
    path, image_dir = Path(path), Path(image_dir)
    h5py = require("h5py", "reading COFW .mat files")
    if not h5py.is_hdf5(path):
        raise DataError(path, "not a MATLAB v7.3 (HDF5) .mat file")
    image_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    with h5py.File(path, "r") as f:
        splits = [split for split in _SPLITS if split[0] in f and split[1] in f]
        if not splits:
            raise DataError(path, "no IsTr/phisTr or IsT/phisT variables")
        for images_key, phis_key, subset in splits:
            for key in (images_key, phis_key):  # declared sizes, before anything is read
                if not isinstance(f[key], h5py.Dataset) or f[key].size > MAX_FACES * 3 * _NUM_POINTS:
                    raise DataError(path, f"{key} is not an array of at most {MAX_FACES} faces")
            refs = np.asarray(f[images_key]).reshape(-1)
            phis = np.asarray(f[phis_key], dtype=np.float64).T
            if phis.ndim != 2 or phis.shape[1] != 3 * _NUM_POINTS:
                raise DataError(path, f"{phis_key} is {phis.shape[::-1]} in HDF5, expected (87, n)")
            if len(refs) != len(phis):
                raise DataError(path, f"{images_key} has {len(refs)} images but {phis_key} {len(phis)} rows")
            for i, (ref, phi) in enumerate(zip(refs, phis)):
                where = f"{images_key}{{{i + 1}}}"
                png, size = _png(path, f, ref, where)
                try:
                    points = check_points(np.stack([phi[:29], phi[29:58]], axis=1) - 1.0, path, _NUM_POINTS,
                                          image_size=size)
                except DataError as e:
                    raise DataError(path, f"{where}: {e.reason}") from None
                image_path = image_dir / f"{subset}_{i + 1:04d}.png"
                write_atomic(image_path, png)
                samples.append(FaceSample(
                    str(image_path), points, dataset="cofw", subset=subset, sample_id=image_path.stem,
                    visible=phi[58:87] == 0,
                ))
    return samples


def _png(path: Path, f, ref, where: str) -> tuple[bytes, tuple[int, int]]:
    """The image behind ``ref`` as PNG bytes, and its ``(width, height)``."""
    h5py = require("h5py", "reading COFW .mat files")
    if not isinstance(ref, h5py.Reference) or not ref:
        raise DataError(path, f"{where} is not an object reference to an image")
    target = f[ref]
    if not isinstance(target, h5py.Dataset):
        raise DataError(path, f"{where} refers to a {type(target).__name__}, not an image")
    if target.ndim not in (2, 3) or (target.ndim == 3 and target.shape[0] != 3):
        raise DataError(path, f"{where}: expected a uint8 grey or RGB image, got {target.dtype} {target.shape[::-1]}")
    try:  # HDF5 holds MATLAB's h x w (x 3) transposed: (3,) w x h
        check_pixels(target.shape[-2], target.shape[-1], f"{where}")
    except ImageError as err:
        raise DataError(path, f"{where}: image {err.reason}") from None
    image = np.asarray(target).T
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataError(path, f"{where}: expected a uint8 grey or RGB image, got {image.dtype} {image.shape}")
    if image.size == 0:
        raise DataError(path, f"{where}: the image is empty ({image.shape[1]}x{image.shape[0]})")
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise DataError(path, f"{where}: cannot encode as PNG")
    return png.tobytes(), (image.shape[1], image.shape[0])

"""Local binary features (Ren, Cao, Wei & Sun, CVPR 2014): the cascade, in numpy.

Cascaded shape regression, ``S(t+1) = S(t) + r_t(phi_t(I, S(t)))``. Shapes are ``(B, K, 2)`` in
0..1 of the crop (:mod:`facemark.geometry`); the start shape is the training mean. Stage ``t``:

1. ``A`` ``(B, 2, 2)``: the similarity (rotation and scale) that maps the mean shape's frame onto
   the current shape, so features and updates turn and scale with the face;
2. ``phi_t``: every landmark ``k`` has a forest of ``J`` trees of depth ``D``. A split node holds
   two offsets ``u1, u2`` (mean-shape frame, within the stage's radius of the landmark) and a
   threshold: ``I(S_k + A u1) - I(S_k + A u2) > threshold`` goes right. The leaf a face reaches in
   each tree is one *local binary feature*; all ``K * J`` of them index ``K * J * 2**D`` columns;
3. ``r_t``: one linear map from all those leaves to the whole shape update (the *global*
   regression, so every landmark's features help every point): ``delta = sum of W_t's rows at the
   reached leaves`` ``(B, 2K)``, in the mean-shape frame, then turned by ``A`` and added.

Trees are stored complete, in heap order (node ``n``'s children are ``2n + 1`` and ``2n + 2``);
where training stopped splitting early the threshold is ``+inf``, so the walk always goes left
and a tree is two arrays. The model file is an ``.npz`` of plain arrays plus a JSON metadata
string: no pickle. Training: :func:`facemark.classical.train.fit_lbf`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facemark.files import atomic_path

FORMAT = "facemark-lbf-1"
CHUNK = 2048  # faces per vectorised pass (bounds the memory of the (B, K, J, 2, 2) sample points)


def to_grey(crops_bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR crops ``(B, S, S, 3)`` -> uint8 grey ``(B, S, S)``; training and inference both use it."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_BGR2GRAY) for c in crops_bgr])


def similarity(mean: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """``(B, 2, 2)`` least-squares rotation+scale ``A`` with ``shapes - centroid ~ A (mean - centroid)``."""
    m = mean - mean.mean(axis=0)  # (K, 2)
    s = shapes - shapes.mean(axis=1, keepdims=True)  # (B, K, 2)
    norm = (m**2).sum()
    a = (s * m).sum(axis=(1, 2)) / norm
    b = (m[:, 0] * s[..., 1] - m[:, 1] * s[..., 0]).sum(axis=1) / norm
    return np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2).astype(np.float32)


def pixel_values(grey: np.ndarray, image_index: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest-pixel intensities (int16) at ``points`` ``(B, ..., 2)`` (0..1 crop coordinates) of
    the images ``grey[image_index]``; points outside the crop read its nearest edge pixel."""
    size = grey.shape[-1]
    xy = np.clip(np.rint(points * size - 0.5), 0, size - 1).astype(np.intp)  # pixel centres
    rows = image_index.reshape(-1, *([1] * (points.ndim - 2)))
    return grey[rows, xy[..., 1], xy[..., 0]].astype(np.int16)


def pair_points(centres: np.ndarray, A: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sample points ``centres + A u`` of offset pairs: ``centres (B, ..., 2)``, ``A (B, 2, 2)``,
    ``offsets (B or 1, ..., 2, 2)`` (pair, x/y) -> ``(B, ..., 2, 2)``."""
    A = A.reshape(len(A), *([1] * (offsets.ndim - 2)), 2, 2)  # broadcasts over (..., pair)
    u, v = offsets[..., 0], offsets[..., 1]
    turned = np.stack([A[..., 0, 0] * u + A[..., 0, 1] * v, A[..., 1, 0] * u + A[..., 1, 1] * v], axis=-1)
    return centres[..., None, :] + turned


def forest_leaves(grey, image_index, shapes, A, offsets, thresholds) -> np.ndarray:
    """Leaf ``(B, K, J)`` in ``0..2**D - 1`` that each face reaches in each landmark's trees.

    ``offsets (K, J, N, 2, 2)`` and ``thresholds (K, J, N)`` hold the ``N = 2**D - 1`` split nodes.
    """
    num_landmarks, num_trees, nodes = thresholds.shape
    depth = int(np.log2(nodes + 1))
    k = np.arange(num_landmarks)[None, :, None]
    j = np.arange(num_trees)[None, None, :]
    out = np.empty((len(shapes), num_landmarks, num_trees), np.intp)
    for start in range(0, len(shapes), CHUNK):
        part = slice(start, start + CHUNK)
        centres = shapes[part][:, :, None, :]  # (b, K, 1, 2)
        node = np.zeros((len(centres), num_landmarks, num_trees), np.intp)
        for _ in range(depth):
            points = pair_points(centres, A[part], offsets[k, j, node])  # (b, K, J, 2, 2)
            values = pixel_values(grey, image_index[part], points)  # (b, K, J, 2)
            node = 2 * node + 1 + (values[..., 0] - values[..., 1] > thresholds[k, j, node])
        out[part] = node - nodes
    return out


def shape_update(weights: np.ndarray, leaves: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The global regression: ``(B, K, 2)`` update from the reached ``leaves (B, K, J)``.

    ``weights (K * J * 2**D, 2K)``: row ``(k * J + j) * 2**D + leaf`` is that leaf's contribution.
    """
    batch, num_landmarks, num_trees = leaves.shape
    leaves_per_tree = len(weights) // (num_landmarks * num_trees)
    columns = np.arange(num_landmarks * num_trees) * leaves_per_tree + leaves.reshape(batch, -1)
    delta = weights[columns].sum(axis=1).reshape(batch, -1, 2)  # mean-shape frame
    return np.einsum("bxy,bky->bkx", A, delta)


@dataclass
class LbfModel:
    mean_shape: np.ndarray  # (K, 2) start shape, 0..1 of the crop
    offsets: np.ndarray  # (T, K, J, 2**D - 1, 2, 2) float32: split-node pixel pairs, mean-shape frame
    thresholds: np.ndarray  # (T, K, J, 2**D - 1) float32
    weights: np.ndarray  # (T, K * J * 2**D, 2K) float32: global regression per stage
    meta: dict  # num_points, input_size, crop, model_name, training record (see train.py)

    @property
    def input_size(self) -> int:
        return int(self.meta["input_size"])

    def stage(self, t: int, grey: np.ndarray, image_index: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        """``S(t+1) = S(t) + r_t(phi_t(I, S(t)))`` for shapes ``(B, K, 2)`` on ``grey[image_index]``."""
        A = similarity(self.mean_shape, shapes)
        leaves = forest_leaves(grey, image_index, shapes, A, self.offsets[t], self.thresholds[t])
        return shapes + shape_update(self.weights[t], leaves, A)

    def predict_grey(self, grey: np.ndarray) -> np.ndarray:
        """``(B, K, 2)`` points in 0..1 of the crops ``grey (B, S, S)``, from the mean shape."""
        shapes = np.repeat(self.mean_shape[None], len(grey), axis=0)
        index = np.arange(len(grey))
        for t in range(len(self.weights)):
            shapes = self.stage(t, grey, index, shapes)
        return shapes.astype(np.float32)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 BGR crops ``(B, S, S, 3)`` -> ``(B, K, 2)`` (the runner contract of :mod:`facemark.api`)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected crops (B, {self.input_size}, {self.input_size}, 3), got {crops.shape}")
        return self.predict_grey(to_grey(crops))

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mean_shape=self.mean_shape, offsets=self.offsets, thresholds=self.thresholds,
                     weights=self.weights, meta=np.array(json.dumps({**self.meta, "format": FORMAT})))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LbfModel:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: LBF model not found")
        try:
            with np.load(path, allow_pickle=False) as data:  # plain arrays only: loading runs no code
                arrays = {k: data[k] for k in ("mean_shape", "offsets", "thresholds", "weights", "meta")}
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{path}: not a facemark LBF model ({err})") from None
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a facemark LBF model (format {meta.get('format')!r})")
        return cls(**arrays, meta=meta)

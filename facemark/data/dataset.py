"""Training/evaluation dataset over a packed store, with reproducible on-the-fly augmentation.

Every sample is cut from the stored region by the crop rule of :mod:`facemark.geometry`, starting
from the landmark box of its points, exactly as inference starts from a given box. Augmentation
is one affine warp (box jitter, scale, rotation, flip) composed with the crop, plus photometric
changes; its random draws come from ``(seed, epoch, index)`` so a resumed run sees the same data.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facemark.data.store import Store
from facemark.geometry import (
    SEED_CROP,
    CropRule,
    apply_affine,
    box_from_points,
    crop_affine,
    crop_box_from_box,
    crops_to_input,
    invert_affine,
    jitter_box,
    warp,
)


@dataclass
class Augment:
    """Augmentation strengths; zero/False turns a part off. ``Augment.none()`` is the identity."""

    rotate: float = 30.0  # degrees, uniform in +-rotate
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.05  # fraction of the crop size
    box_jitter: float = 0.05  # each box edge moves by up to this fraction of the box size
    flip: bool = True
    colour: float = 0.3  # brightness/contrast/saturation jitter strength
    blur: float = 0.2  # probability of a Gaussian blur
    occlusion: float = 0.3  # probability of one patch of a random colour
    degrade: float = 0.0  # probability of a small, blurred, JPEG-compressed face (degrade_image)

    def __post_init__(self):
        """Each strength a finite number in a sensible range (:data:`AUGMENT_RANGES`); ValueError naming it otherwise."""
        for key, (low, high) in AUGMENT_RANGES.items():
            values = getattr(self, key)
            for value in values if key == "scale" else (values,):
                if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                        or not low <= value <= high):
                    raise ValueError(f"augment.{key} = {values!r}: expected {'two numbers' if key == 'scale' else 'a number'}"
                                     f" in {low}..{high}")
        if len(self.scale) != 2 or self.scale[0] > self.scale[1]:
            raise ValueError(f"augment.scale = {self.scale!r}: expected (smallest, largest)")
        if not isinstance(self.flip, bool):
            raise ValueError(f"augment.flip = {self.flip!r}: expected true or false")

    @classmethod
    def none(cls) -> Augment:
        return cls(0.0, (1.0, 1.0), 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0)


#: the range of each augmentation strength: rotation in degrees, scale factors, shifts and box-edge
#: moves as fractions (an edge moving by half the box would empty it), colour strength, probabilities
AUGMENT_RANGES = {"rotate": (0.0, 180.0), "scale": (0.1, 10.0), "translate": (0.0, 1.0), "box_jitter": (0.0, 0.4),
                  "colour": (0.0, 1.0), "blur": (0.0, 1.0), "occlusion": (0.0, 1.0), "degrade": (0.0, 1.0)}


def images_to_tensor(images_bgr: np.ndarray) -> torch.Tensor:
    """uint8 BGR ``(B, H, W, 3)`` -> float RGB ``(B, 3, H, W)`` in 0..1 (the models' input)."""
    return torch.from_numpy(crops_to_input(images_bgr))


def _augment_matrix(rng: np.random.Generator, aug: Augment, size: int) -> tuple[np.ndarray, bool]:
    """Affine (input pixels -> input pixels) for rotation/scale/translation and whether to flip."""
    angle = rng.uniform(-aug.rotate, aug.rotate) if aug.rotate else 0.0
    scale = rng.uniform(*aug.scale)
    shift = rng.uniform(-aug.translate, aug.translate, size=2) * size
    centre = ((size - 1) / 2, (size - 1) / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += shift
    flip = bool(aug.flip and rng.random() < 0.5)
    if flip:
        matrix = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([matrix, [0, 0, 1]])
    return matrix, flip


#: degrade_image's draws: the face's inter-ocular distance (outer eye corners) in the shrunk copy,
#: the Gaussian blur there and the JPEG quality; they cover faces in group photos and video frames
DEGRADE_IOD = (12.0, 40.0)  # pixels
DEGRADE_BLUR = (0.0, 1.5)  # sigma, pixels of the shrunk copy
DEGRADE_JPEG = (30, 90)  # quality


def degrade_image(rng: np.random.Generator, image: np.ndarray, iod: float) -> np.ndarray:
    """The crop as a small face would give it: shrunk so that the face's inter-ocular distance
    ``iod`` (pixels of ``image``) becomes a random one of :data:`DEGRADE_IOD`, blurred, JPEG-compressed,
    and scaled back up as the crop of such a photo is. A face already that small is only blurred and compressed."""
    size = image.shape[0]
    factor = min(1.0, rng.uniform(*DEGRADE_IOD) / max(float(iod), 1e-6))
    small_size = max(8, round(size * factor))
    small = cv2.resize(image, (small_size, small_size), interpolation=cv2.INTER_AREA) if small_size < size else image
    sigma = rng.uniform(*DEGRADE_BLUR)
    if sigma > 0.05:
        small = cv2.GaussianBlur(small, (0, 0), sigma)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(DEGRADE_JPEG[0], DEGRADE_JPEG[1] + 1))])
    small = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else small
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR) if small.shape[0] != size else small


def _photometric(rng: np.random.Generator, image: np.ndarray, aug: Augment) -> np.ndarray:
    if aug.colour:
        image = image.astype(np.float32)
        grey = image.mean(axis=2, keepdims=True)
        saturation = 1 + rng.uniform(-aug.colour, aug.colour)
        image = grey + (image - grey) * saturation
        contrast = 1 + rng.uniform(-aug.colour, aug.colour)
        brightness = rng.uniform(-aug.colour, aug.colour) * 64
        image = (image - image.mean()) * contrast + image.mean() + brightness
        image = np.clip(image, 0, 255).astype(np.uint8)
    if aug.blur and rng.random() < aug.blur:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if aug.occlusion and rng.random() < aug.occlusion:
        size = image.shape[0]
        w, h = (rng.uniform(0.1, 0.35, size=2) * size).astype(int)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        image = image.copy()
        image[y : y + h, x : x + w] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return image


class LandmarkDataset(Dataset):
    """Items: ``(image (3, S, S) float RGB 0..1, points (K, 2) normalised, index)``.

    Partial labels: a missing point (NaN in the store) or one flagged occluded (COFW's ``visible``)
    is NaN in the target points, which the losses mask out; the crop box comes from the present points.
    """

    def __init__(
        self,
        store: Store,
        input_size: int = 128,
        crop_rule: CropRule = SEED_CROP,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        self.store = store
        self.input_size = input_size
        self.crop_rule = crop_rule
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.scheme = store.scheme

    def __len__(self) -> int:
        return len(self.store)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crop_box(self, i: int, box=None):
        """The crop box (original pixels) that evaluation and inference use for sample ``i``."""
        entry = self.store.samples[i]
        box = box_from_points(self.store.points[i]) if box is None else box
        return crop_box_from_box(box, tuple(entry["image_size"]), self.crop_rule)

    def sample(self, i: int, rng: np.random.Generator | None = None,
               occluded_missing: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Crop (and augment) sample ``i``: BGR uint8 ``(S, S, 3)`` and normalised points ``(K, 2)``;
        with ``occluded_missing`` points flagged occluded are NaN (missing) in the target."""
        size, aug = self.input_size, self.augment
        points = np.asarray(self.store.points[i], dtype=np.float32)
        box = box_from_points(points)
        if aug is not None and rng is not None:
            box = jitter_box(rng, box, aug.box_jitter)
        entry = self.store.samples[i]
        to_input = crop_affine(crop_box_from_box(box, tuple(entry["image_size"]), self.crop_rule), size)
        flip = False
        if aug is not None and rng is not None:
            extra, flip = _augment_matrix(rng, aug, size)
            to_input = extra @ np.vstack([to_input, [0, 0, 1]])
        store_to_input = to_input @ np.vstack([invert_affine(self.store.region_affine(i)), [0, 0, 1]])
        image = warp(np.asarray(self.store.images[i]), store_to_input, size)
        target = (apply_affine(to_input, points) + 0.5) / size
        visible = entry.get("visible")
        if occluded_missing and visible is not None and not all(visible):  # occluded (COFW): a missing point for the losses
            target[~np.asarray(visible, dtype=bool)] = np.nan
        if flip:
            target = target[list(self.scheme.flip_perm)]
        if aug is not None and rng is not None:
            if aug.degrade and rng.random() < aug.degrade:
                corners = list(self.scheme.outer_eye_corners)
                iod = float(np.linalg.norm(np.nan_to_num(target[corners[0]] - target[corners[1]]))) * size
                image = degrade_image(rng, image, iod if iod > 0 else 0.3 * size)
            image = _photometric(rng, image, aug)
        return image, target.astype(np.float32)

    def __getitem__(self, key: int | tuple[int, int]):
        """``key``: an index (drawn for :meth:`set_epoch`'s epoch) or ``(epoch, index)``."""
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, int(epoch), int(i)]) if self.augment is not None else None
        image, target = self.sample(int(i), rng)
        return images_to_tensor(image[None])[0], torch.from_numpy(target), int(i)

    def mean_shape(self) -> np.ndarray:
        """Average normalised shape ``(K, 2)`` of the un-augmented crops (PIPNet's neighbour tables,
        the mean-shape baseline)."""
        shapes = np.array([self.sample(i, occluded_missing=False)[1] for i in range(len(self))])
        if not np.isnan(shapes).any():
            return shapes.mean(axis=0).astype(np.float32)
        return np.nanmean(shapes, axis=0).astype(np.float32)  # partial labels: over the faces that have each point

"""Training of the classical models, from the same prepared data as the CNNs::

    facemark train --method ert --config configs/ert.yaml   # dlib ERT  -> runs/ert_300w/model.dat (+ .dat.json)
    facemark train --method lbf --config configs/lbf.yaml   # numpy LBF -> runs/lbf_300w/model.lbf.npz
    facemark train --method lbf --config configs/lbf.yaml --set 'points=[36,45,30,48,54]' --set out=runs/lbf_300w_5pt

Both read a folder made by ``facemark data prepare`` (``train/`` and ``val/`` stores) and cut each
training face into a crop exactly as inference will (:class:`facemark.data.dataset.LandmarkDataset`,
unaugmented), plus ``copies - 1`` augmented copies (box jitter, rotation, scale, mirror). ``points``
keeps a subset of the points, in the order of a point scheme (e.g. the outer eye corners, nose tip
and mouth corners give the 5-point scheme); the crops are then cut from the tight box of those
points, the box a model of that many points is given by the API and the evaluation. Every config
value is type- and range-checked before any work starts.
After training the model is scored on the ``val/`` store's crops (inter-ocular NME, original
pixels) and the model file records its point count, crop size and rule, data, config and score.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pydantic
from pydantic import Field
from tqdm import tqdm

from facemark import __version__
from facemark.classical.ert import ErtRunner, card_path, face_rect, import_dlib
from facemark.classical.lbf import LbfModel, forest_leaves, pair_points, pixel_values, shape_update, similarity, to_grey
from facemark.config import ConfigError, read_values
from facemark.data.dataset import Augment, LandmarkDataset
from facemark.data.formats import write_dlib_xml
from facemark.data.record import DataError, FaceSample
from facemark.data.store import Store
from facemark.files import atomic_path, write_atomic
from facemark.geometry import CropRule, from_crop, landmark_box_in_crop
from facemark.metrics import nme
from facemark.plots import write_image
from facemark.schemes import SCHEMES

# --------------------------------------------------------------------------- configuration
# Types and ranges are the annotations, enforced by pydantic as for the CNN configs (facemark.config).

Count = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, le=1)]


@dataclass
class ClassicalConfig:
    data: str = "data/300w-lite"  # a prepared folder with train/ and val/ stores
    out: str = "runs/classical"
    input_size: Annotated[int, Field(ge=16, le=1024)] = 128  # crop size in pixels
    crop: CropRule = field(default_factory=lambda: CropRule(clip=False))  # must not clip: the face sits at a fixed place
    points: list[Annotated[int, Field(ge=0)]] | None = None  # indices of the stored points to keep (None: all)
    copies: Annotated[int, Field(ge=1, le=100)] = 2  # crops per training face: plain + (copies - 1) augmented
    augment: Augment = field(default_factory=lambda: Augment(
        rotate=15.0, scale=(0.9, 1.1), translate=0.03, box_jitter=0.05, flip=True, colour=0.2, blur=0.0, occlusion=0.0))
    max_faces: Annotated[int, Field(ge=0)] = 0  # use only the first N training faces (0: all); for quick runs
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    seed: Annotated[int, Field(ge=0)] = 0


@dataclass
class ErtConfig(ClassicalConfig):
    """dlib's ``shape_predictor_training_options`` (same names, except ``oversampling``)."""

    out: str = "runs/ert_300w"
    cascade_depth: Annotated[int, Field(ge=1, le=100)] = 10
    tree_depth: Annotated[int, Field(ge=1, le=12)] = 4
    num_trees_per_cascade_level: Count = 500
    nu: Fraction = 0.1  # shrinkage (learning rate)
    oversampling: Annotated[int, Field(ge=1, le=1000)] = 20  # start shapes per training crop (oversampling_amount)
    oversampling_translation_jitter: Annotated[float, Field(ge=0, le=1)] = 0.0
    feature_pool_size: Annotated[int, Field(ge=2)] = 400
    feature_pool_region_padding: Annotated[float, Field(gt=-0.5, le=2)] = 0.0
    lambda_param: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.1  # prior favouring close pixel pairs
    num_test_splits: Count = 20
    keep_xml: bool = False  # keep the crops and dlib XML written for training (<out>/dlib_xml)


@dataclass
class LbfConfig(ClassicalConfig):
    out: str = "runs/lbf_300w"
    radius: list[Fraction] = field(default_factory=lambda: [0.3, 0.2, 0.15, 0.1, 0.08, 0.06])  # per stage, of the crop
    trees: Annotated[int, Field(ge=1, le=100)] = 5  # per landmark and stage
    tree_depth: Annotated[int, Field(ge=1, le=8)] = 4
    feature_pool_size: Annotated[int, Field(ge=2, le=10_000)] = 400  # random pixel pairs per landmark and stage
    split_features: Fraction = 0.3  # fraction of the pool tried at each split
    sample_fraction: Fraction = 0.5  # bootstrap sample per tree
    oversampling: Annotated[int, Field(ge=1, le=100)] = 5  # start shapes per crop: the mean + other faces' shapes
    init_jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.02  # random shift/scale of those start shapes
    ridge: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 4.0  # L2 penalty of the global regression, in leaf sizes


CONFIGS = {"ert": ErtConfig, "lbf": LbfConfig}


_NESTED = {"crop": CropRule, "augment": Augment}


def _check_keys(cls, values, where: str, prefix: str = "") -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (known: {', '.join(fields)})")
        if key in _NESTED and isinstance(value, dict):
            _check_keys(_NESTED[key], value, where, f"{prefix}{key}.")


def load_classical_config(method: str, path: str | Path, overrides: list[str] | None = None) -> ClassicalConfig:
    """Read and check a YAML config for ``method`` (``ert`` or ``lbf``); ``overrides`` are
    ``key=value`` strings (YAML values, dotted keys), as for ``facemark train --set``."""
    if method not in CONFIGS:
        raise ConfigError(f"unknown method {method!r} (known: {', '.join(CONFIGS)})")
    path = Path(path)
    values = read_values(path, overrides)
    cls = CONFIGS[method]
    _check_keys(cls, values, str(path))
    try:
        config = pydantic.TypeAdapter(cls).validate_python(values)
    except pydantic.ValidationError as err:
        e = err.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}") from None
    if config.crop.clip:
        raise ConfigError(f"{path}: crop.clip = True: classical models need an unclipped crop (the face must sit "
                          "at a fixed place in it)")
    if isinstance(config, LbfConfig) and not config.radius:
        raise ConfigError(f"{path}: radius = []: give one radius per stage")
    return config


def _open_stores(config: ClassicalConfig, where: str) -> tuple[Store, Store]:
    """The train and val stores, seen with only ``config.points``, checked before any work."""
    data = Path(config.data)
    try:
        train, val = Store.open(data / "train"), Store.open(data / "val", verify=False)
    except DataError as err:
        raise ConfigError(f"{where}: data: {err} (make the stores with `facemark data prepare`)") from None
    if config.points is None:
        return train, val
    if not config.points or len(set(config.points)) != len(config.points) or max(config.points) >= train.num_points:
        raise ConfigError(f"{where}: points = {config.points!r}: expected distinct indices in 0..{train.num_points - 1}")
    if len(config.points) not in SCHEMES:
        raise ConfigError(f"{where}: points = {config.points!r}: {len(config.points)} points form no point scheme "
                          f"(known: {sorted(SCHEMES)}; add one to facemark/schemes.py)")
    return point_subset(train, config.points), point_subset(val, config.points)


def point_subset(store: Store, points: list[int]) -> Store:
    """``store`` seen with only ``points`` (in the order of their scheme): crops are then cut from the
    tight box of those points, as the API and evaluation do for a model of that many points."""
    index = {**store.index, "num_points": len(points)}
    return Store(store.path, store.images, np.ascontiguousarray(np.asarray(store.points)[:, points]), index)


# --------------------------------------------------------------------------- data


def iter_crops(store: Store, config: ClassicalConfig, progress: bool = True):
    """Yield ``(name, crop (S, S, 3) uint8 BGR, points (K, 2) in 0..1 of the crop)`` per training crop:
    each face once plain, then ``copies - 1`` times augmented (seeded per copy and face)."""
    dataset = LandmarkDataset(store, config.input_size, config.crop, config.augment, config.seed)
    count = min(len(store), config.max_faces or len(store))
    for copy in tqdm(range(config.copies), desc="crops", unit="copy", disable=not progress):
        for i in range(count):
            rng = np.random.default_rng([config.seed, copy, i]) if copy else None
            crop, points = dataset.sample(i, rng)
            yield f"{i:05d}_{copy}", crop, points


def validation_nme(runner, store: Store, config: ClassicalConfig, batch: int = 64) -> float:
    """Mean inter-ocular NME of ``runner`` on the ``store``'s plain crops (cut from the ground-truth
    landmark box), in original-image pixels: the score written into the model's metadata."""
    dataset = LandmarkDataset(store, config.input_size, config.crop)
    pred, gt = [], np.asarray(store.points)
    for start in range(0, len(store), batch):
        indices = range(start, min(start + batch, len(store)))
        normalised = runner(np.stack([dataset.sample(i)[0] for i in indices]))
        pred += [from_crop(p, dataset.crop_box(i)) for i, p in zip(indices, normalised)]
    return float(nme(np.stack(pred), gt, "inter_ocular", dataset.scheme).mean())


def model_metadata(method: str, config: ClassicalConfig, train: Store, num_points: int, **training) -> dict:
    """What travels with a classical model: the fields inference reads (as in an ONNX file's
    metadata: ``model_name``, ``num_points``, ``input_size``, ``crop``) and how it was made."""
    return {
        "model_name": method,
        "num_points": num_points,
        "input_size": config.input_size,
        "crop": config.crop.to_dict(),
        "face_box_in_crop": landmark_box_in_crop(config.crop),
        "points_from": config.points,  # indices into the training data's points (None: all)
        "training": {"data": str(train.path), "faces": min(len(train), config.max_faces or len(train)),
                     "crops_per_face": config.copies, **training},
        "config": dataclasses.asdict(config),
        "facemark_version": __version__,
    }


# --------------------------------------------------------------------------- ERT (dlib)


def train_ert(config: ErtConfig, where: str = "config", progress: bool = True) -> dict:
    """Write the training crops and dlib's XML, run ``dlib.train_shape_predictor``, write the card."""
    dlib = import_dlib()
    train, val = _open_stores(config, where)
    out = Path(config.out)
    work = out / "dlib_xml"
    left, top, right, bottom = face_rect(config.input_size, config.crop)
    size, samples = config.input_size, []
    for name, crop, points in iter_crops(train, config, progress):
        image = write_image(work / f"{name}.png", crop)
        # dlib reads an XML box as the inclusive rectangle (left, top, left + width - 1, top + height - 1)
        samples.append(FaceSample(str(image), points * size - 0.5, sample_id=name, box=(left, top, right + 1, bottom + 1)))
    write_dlib_xml(work / "train.xml", samples)

    options = dlib.shape_predictor_training_options()
    for key in ("cascade_depth", "tree_depth", "num_trees_per_cascade_level", "nu", "oversampling_translation_jitter",
                "feature_pool_size", "feature_pool_region_padding", "lambda_param", "num_test_splits"):
        setattr(options, key, getattr(config, key))
    options.oversampling_amount = config.oversampling
    options.num_threads = config.threads
    options.random_seed = str(config.seed)
    options.be_verbose = progress  # dlib prints each cascade level and its time left
    model_path = out / "model.dat"
    start = time.time()
    with atomic_path(model_path) as tmp:
        dlib.train_shape_predictor(str(work / "train.xml"), str(tmp), options)
    seconds = time.time() - start
    if not config.keep_xml:
        shutil.rmtree(work)

    meta = {"format": "facemark-ert-1", **model_metadata(
        "ert", config, train, len(samples[0].points), seconds=round(seconds, 1), dlib_version=dlib.__version__)}
    val_nme = validation_nme(ErtRunner(model_path, meta), val, config)
    meta["training"]["val_nme"] = val_nme
    write_atomic(card_path(model_path), json.dumps(meta, indent=1))
    return {"model": str(model_path), "val_nme": val_nme, "seconds": seconds}


# --------------------------------------------------------------------------- LBF (numpy + scikit-learn)


def _tree_to_heap(tree, pool: np.ndarray, offsets: np.ndarray, thresholds: np.ndarray) -> None:
    """Copy a fitted sklearn tree into the complete heap layout of :mod:`facemark.classical.lbf`
    (sklearn goes left when ``x <= threshold``: the same test)."""
    stack = [(0, 0)]  # (sklearn node, heap node)
    while stack:
        node, heap = stack.pop()
        if tree.children_left[node] == -1:  # a leaf: heap nodes below keep threshold +inf (go left)
            continue
        offsets[heap], thresholds[heap] = pool[tree.feature[node]], tree.threshold[node]
        stack += [(tree.children_left[node], 2 * heap + 1), (tree.children_right[node], 2 * heap + 2)]


def _ridge(leaves: np.ndarray, targets: np.ndarray, leaves_per_tree: int, ridge: float) -> np.ndarray:
    """Global regression: ``W`` minimising ``|Phi W - targets|^2 + alpha |W|^2`` for the one-hot leaf
    matrix ``Phi (N, K * J * leaves_per_tree)`` (normal equations; the matrix is small).

    ``alpha = ridge * N / leaves_per_tree``, the penalty in units of a leaf's mean sample count, so
    one ``ridge`` fits any data size. The leaves were grown on these very samples, so they fit
    them far better than new faces: the penalty has to be strong (``ridge`` of a few units).
    """
    import scipy.linalg
    import scipy.sparse

    n, trees = len(leaves), leaves.shape[1] * leaves.shape[2]
    columns = (np.arange(trees) * leaves_per_tree + leaves.reshape(n, -1)).ravel()
    phi = scipy.sparse.csr_matrix((np.ones(len(columns)), (np.repeat(np.arange(n), trees), columns)),
                                  shape=(n, trees * leaves_per_tree))
    gram = (phi.T @ phi).toarray()
    gram[np.diag_indices_from(gram)] += ridge * n / leaves_per_tree
    return scipy.linalg.solve(gram, phi.T @ targets, assume_a="pos").astype(np.float32)


def fit_lbf(grey: np.ndarray, truth: np.ndarray, config: LbfConfig, progress: bool = True) -> tuple[LbfModel, list]:
    """Train the cascade on crops ``grey (M, S, S)`` with points ``truth (M, K, 2)`` (0..1 of the crop).

    Returns the model (``meta`` still empty) and the training error after each stage.
    """
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(config.seed)
    faces, num_points = truth.shape[:2]
    trees, leaves_per_tree = config.trees, 2**config.tree_depth
    mean = truth.mean(axis=0)
    # start shapes: per crop the mean shape and (oversampling - 1) other faces' shapes, moved a little
    image_index = np.repeat(np.arange(faces), config.oversampling)
    shapes = truth[rng.integers(0, faces, len(image_index))]
    shapes[:: config.oversampling] = mean
    centre = shapes.mean(axis=1, keepdims=True)
    scale = 1 + rng.uniform(-config.init_jitter, config.init_jitter, (len(shapes), 1, 1))
    shift = rng.uniform(-config.init_jitter, config.init_jitter, (len(shapes), 1, 2))
    shapes = ((shapes - centre) * scale + centre + shift).astype(np.float32)
    target = truth[image_index]
    stages = len(config.radius)
    model = LbfModel(
        mean_shape=mean.astype(np.float32),
        offsets=np.zeros((stages, num_points, trees, leaves_per_tree - 1, 2, 2), np.float32),
        thresholds=np.full((stages, num_points, trees, leaves_per_tree - 1), np.inf, np.float32),
        weights=np.zeros((stages, num_points * trees * leaves_per_tree, 2 * num_points), np.float32),
        meta={},
    )
    history = []
    for t, radius in enumerate(config.radius):
        A = similarity(mean, shapes)
        residual = np.einsum("bxy,bky->bkx", np.linalg.inv(A), target - shapes)  # in the mean-shape frame
        for k in tqdm(range(num_points), desc=f"stage {t + 1}/{stages} forests", unit="point", disable=not progress):
            # candidate pixel pairs, uniform in the disc of this stage's radius around point k
            r = radius * np.sqrt(rng.uniform(size=(config.feature_pool_size, 2)))
            angle = rng.uniform(0, 2 * np.pi, size=(config.feature_pool_size, 2))
            pool = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=-1).astype(np.float32)  # (P, 2, 2)
            points = pair_points(shapes[:, k, None, :], A, pool[None])  # (N, P, 2, 2)
            values = pixel_values(grey, image_index, points)
            features = values[..., 0] - values[..., 1]  # (N, P) pixel differences
            forest = RandomForestRegressor(
                trees, max_depth=config.tree_depth, max_features=config.split_features,
                max_samples=config.sample_fraction, n_jobs=1, random_state=int(rng.integers(2**31)),
            ).fit(features, residual[:, k])
            for j, estimator in enumerate(forest.estimators_):
                _tree_to_heap(estimator.tree_, pool, model.offsets[t, k, j], model.thresholds[t, k, j])
        leaves = forest_leaves(grey, image_index, shapes, A, model.offsets[t], model.thresholds[t])
        model.weights[t] = _ridge(leaves, residual.reshape(len(shapes), -1), leaves_per_tree, config.ridge)
        shapes = shapes + shape_update(model.weights[t], leaves, A)
        error = float(np.linalg.norm(shapes - target, axis=-1).mean())
        history.append(error)
        if progress:
            tqdm.write(f"stage {t + 1}/{stages}: mean training point error {100 * error:.2f} % of the crop")
    return model, history


def train_lbf(config: LbfConfig, where: str = "config", progress: bool = True) -> dict:
    train, val = _open_stores(config, where)
    grey, truth = [], []
    for _, crop, points in iter_crops(train, config, progress):
        grey.append(to_grey(crop[None])[0])
        truth.append(points)
    start = time.time()
    model, history = fit_lbf(np.stack(grey), np.stack(truth).astype(np.float64), config, progress)
    seconds = time.time() - start
    model.meta = model_metadata("lbf", config, train, model.mean_shape.shape[0], seconds=round(seconds, 1),
                                train_error_per_stage=history)
    model.meta["training"]["val_nme"] = val_nme = validation_nme(model, val, config)
    path = model.save(Path(config.out) / "model.lbf.npz")
    return {"model": str(path), "val_nme": val_nme, "seconds": seconds}


def train_classical(method: str, config_path: str | Path, overrides: list[str] | None = None,
                    progress: bool = True) -> dict:
    """``facemark train --method ert|lbf``: check the config, train with ``threads`` threads, return a summary."""
    from threadpoolctl import threadpool_limits

    config = load_classical_config(method, config_path, overrides)
    with threadpool_limits(config.threads):  # numpy's BLAS, scikit-learn
        trainer = train_ert if method == "ert" else train_lbf
        summary = trainer(config, str(config_path), progress)
    return {**summary, "method": method}

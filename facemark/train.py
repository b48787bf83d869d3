"""The training loop: one file, read top to bottom.

Single process (CPU)::

    facemark train --config configs/300w_seed_senet_128.yaml

Several processes, one per GPU or CPU slot (PyTorch DDP; gloo on CPU, nccl on GPU)::

    torchrun --nproc_per_node=4 -m facemark.cli train --config configs/300w_seed_senet_128.yaml

Resume after an interruption (SIGINT/SIGTERM write a checkpoint; after SIGKILL the last periodic
one is used)::

    facemark train --config ... --resume

Resuming is exact: the data order and augmentation draws are functions of ``(seed, epoch,
index)``, dropout is seeded per step, and model, optimizer, scheduler and step come from the
checkpoint, so N straight steps and N/2 + kill + resume give the same weights. A resumed run is
compared with the checkpoint's config (:func:`resume_changes`): a changed model, crop, scheme,
data, batch size or seed is refused in one line; any other change (lr, schedule, steps, augment,
...) is applied, said and recorded (``config.json`` and the history hold what was used).
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from facemark.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from facemark.config import ConfigError, TrainConfig, config_to_dict, load_config
from facemark.data.dataset import LandmarkDataset
from facemark.data.faces import training_record
from facemark.data.store import Store, check_prepared
from facemark.files import remove_stale_temporaries, write_atomic
from facemark.geometry import CropRule, from_crop
from facemark.losses import get_loss
from facemark.metrics import describe, nme
from facemark.models import create_model
from facemark.plots import plot_loss_curve
from facemark.schemes import resolve_scheme, spec_value
from facemark.spec import resolve_model

NME_BOX = "ground-truth landmark box"  # the figure printed at each validation names the scheme's normaliser


def lr_factor(config: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at ``step`` (the recipe: x0.98 every 1000 steps, staircase)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "exponential":
        return config.lr_decay ** (step // config.lr_decay_steps)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0)))
    if config.schedule == "step":
        return 0.1 ** sum(step >= m * config.steps for m in config.lr_milestones)
    raise ValueError(f"config.schedule: unknown schedule '{config.schedule}' (exponential, cosine, step)")


def epoch_batches(sampler: DistributedSampler, batch_size: int, steps_per_epoch: int, step: int, extra=None):
    """Batches of ``(epoch, index)`` from training step ``step`` on, epoch after epoch, without end:
    each epoch's order is the sampler's for that epoch, so a resumed run continues mid-epoch exactly.
    ``extra``: an :class:`ExtraDraws` adding its faces to every batch (indices after the main set's)."""
    epoch, offset = divmod(step, steps_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        indices = list(sampler)
        for b in range(offset, steps_per_epoch):
            batch = [(epoch, i) for i in indices[b * batch_size : (b + 1) * batch_size]]
            yield batch + (extra.draw(epoch * steps_per_epoch + b, epoch) if extra is not None else [])
        epoch, offset = epoch + 1, 0


class ExtraDraws:
    """``per_batch`` faces of the extra set for every step, for this process: a walk through seeded
    permutations of the set, a function of the step only (so resuming draws the same ones)."""

    def __init__(self, size: int, per_batch: int, offset: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.per_batch, self.offset, self.seed, self.rank, self.world = size, per_batch, offset, seed, rank, world

    def draw(self, step: int, epoch: int) -> list[tuple[int, int]]:
        out = []
        for k in range(self.per_batch):
            position = (step * self.world + self.rank) * self.per_batch + k
            round_, i = divmod(position, self.size)
            perm = np.random.default_rng([self.seed, 1, round_]).permutation(self.size)
            out.append((epoch, self.offset + int(perm[i])))
        return out


class Mixed(torch.utils.data.Dataset):
    """The main training set followed by an extra one: index ``len(main) + j`` is the extra set's ``j``."""

    def __init__(self, main: LandmarkDataset, extra: LandmarkDataset):
        self.main, self.extra = main, extra

    def __len__(self) -> int:
        return len(self.main) + len(self.extra)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if i < len(self.main):
            return self.main[(epoch, i)]
        image, target, _ = self.extra[(epoch, i - len(self.main))]
        return image, target, i


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d * ema + (1 - d) * model`` for every floating tensor (weights and batch-norm statistics;
    counters are copied), with the usual warm-up ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    for averaged, current in zip(ema.state_dict().values(), model.state_dict().values()):
        if averaged.dtype.is_floating_point:
            averaged.mul_(d).add_(current.detach(), alpha=1 - d)
        else:
            averaged.copy_(current)


def init_path(init: str) -> Path:
    """The checkpoint named by ``config.init`` (or ``teacher``): a shipped model name ("default",
    "default-5") or a ``.pt`` file, by the rule every command uses (:func:`facemark.spec.resolve_model`,
    the one :mod:`facemark.runtime` loads models with); :class:`CheckpointError` in one line otherwise."""
    try:
        path = resolve_model(init, backend="torch")
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(f"init {init}: {err}") from None
    if path.suffix != ".pt":
        raise CheckpointError(f"init {init}: {path} is not a .pt checkpoint (training starts from torch weights; "
                              "an .onnx or classical model cannot be fine-tuned)")
    return path


#: where :func:`configs_that_fit` looks: the training configs of a source checkout
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def configs_that_fit(state: dict, config_dir: Path = CONFIG_DIR) -> list[Path]:
    """The training configs in ``config_dir`` that build the architecture of the checkpoint ``state``
    (its model and input size, every tensor shaped as its own for its point count), the config it was
    trained with first (same ``out``), then by name."""
    want = {name: tuple(tensor.shape) for name, tensor in state["model"].items()}
    fits = []
    for path in sorted(config_dir.glob("*.yaml")):
        try:
            config = load_config(path)
        except (ConfigError, OSError):  # a classical method's config, say
            continue
        if config.model != state["model_name"] or config.input_size != state["input_size"]:
            continue
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = create_model(config.model, num_points=state["num_points"], input_size=config.input_size,
                                 **config.model_args)
        if {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()} == want:
            fits.append((config.out != (state.get("config") or {}).get("out"), path))
    return [path for _, path in sorted(fits)]


def init_from_checkpoint(model: torch.nn.Module, init: str, partial: bool = False) -> dict:
    """Copy every tensor of the ``init`` checkpoint whose name and shape match ``model``'s; the
    rest (the head when the point count differs, or a different model's layers) keep their fresh
    initialisation. A ResNet backbone with fewer blocks per stage than the checkpoint's takes each
    stage's first blocks (:meth:`~facemark.models.registry.LandmarkModel.renames_from`).
    Returns ``{"path", "copied": [names], "reinitialised": [names], "backbone": (matched, of)}``.

    When half or fewer of the model's backbone tensors (``backbone.*``; every tensor for a model
    without one) match, the checkpoint is another architecture and training would start, in effect,
    from scratch: :class:`ConfigError` in one line naming the configs that fit the checkpoint, unless
    ``partial`` (config ``init_partial``). A head that differs (another point count or neighbour
    count, as a 5-point model fine-tuned from the 68-point one) is not counted."""
    path = init_path(init)
    state = load_checkpoint(path)  # weights_only, fields checked
    own = model.state_dict()
    renames = model.renames_from(state["model_args"])  # a shallower ResNet takes each stage's first blocks
    source = {name: state["model"][renames.get(name, name)] for name in own if renames.get(name, name) in state["model"]}
    copied = {k: v for k, v in source.items() if tuple(v.shape) == tuple(own[k].shape)}
    backbone = [k for k in own if k.startswith("backbone.")] or list(own)
    matched = sum(k in copied for k in backbone)
    if matched * 2 <= len(backbone) and not partial:
        fits = configs_that_fit(state)
        args = " ".join(f"{k}={v}" for k, v in state["model_args"].items() if k not in ("num_points", "input_size"))
        more = f" ({len(fits) - 1} more in {_shown(CONFIG_DIR)} fit too)" if len(fits) > 1 else ""
        named = (f"the config that fits it: {_shown(fits[0])}{more}" if fits
                 else f"no config in {_shown(CONFIG_DIR)} fits it")
        raise ConfigError(f"init {init}: only {matched} of this model's {len(backbone)} backbone tensors match "
                          f"{_shown(path)} ({state['model_name']} {args}, {state['input_size']} px), so training would "
                          f"start from scratch; {named}; --set init_partial=true copies the {len(copied)} matching "
                          "tensors anyway")
    model.load_state_dict({**own, **copied})
    return {"path": str(path), "copied": sorted(copied), "reinitialised": sorted(k for k in own if k not in copied),
            "backbone": (matched, len(backbone))}


#: config keys a resumed run must keep: they define the model (weights, crop, scheme) and the data order
RESUME_FIXED = ("model", "model_args", "input_size", "crop", "scheme", "data", "batch_size", "seed", "extra_data",
                "extra_fraction")
#: config keys whose change moves the learning rate at once
_LR_KEYS = ("lr", "schedule", "lr_decay", "lr_decay_steps", "lr_milestones", "warmup_steps", "steps")


def resume_changes(config: TrainConfig, state: dict, model_args: dict, scheme, path: Path) -> dict[str, tuple]:
    """``{key: (checkpoint's value, new value)}`` for the config keys that changed since the checkpoint
    at ``path`` and may change (they are applied); :class:`CheckpointError` naming the keys when one
    of :data:`RESUME_FIXED` changed (the model's spec is compared even in checkpoints without a config)."""
    old, new = dict(state.get("config") or {}), config_to_dict(config)
    fixed = {"model": (state["model_name"], config.model), "model_args": (state["model_args"], model_args),
             "crop": (CropRule(**state["crop"]).to_dict(), config.crop.to_dict())}
    if "scheme" in state:
        fixed["scheme"] = (state["scheme"], spec_value(scheme))
    fixed.update({key: (old[key], new[key]) for key in RESUME_FIXED if key not in fixed and key in old})
    refused = [f"{key} {was!r} -> {now!r}" for key, (was, now) in fixed.items() if was != now]
    if refused:
        raise CheckpointError(f"{path}: cannot resume with a changed {'; '.join(refused)} (the checkpoint was trained "
                              "with the first); keep it, or train into a new out")
    return {key: (old[key], new[key]) for key in new
            if key in old and key not in RESUME_FIXED and key != "out" and old[key] != new[key]}


class Teacher:
    """A trained model whose flip-tested points become (part of) the targets: distillation of the
    flip test (and of a larger or sharper-input network) into one pass of the student.

    The teacher sees the student's augmented crops (resized to its own input size: points are
    normalised to the crop, so any input size works with the same crop rule) and, with ``flip``,
    their mirrors in the same batch; its points are averaged as :class:`facemark.api.Landmarker`'s
    flip test averages them."""

    def __init__(self, name: str, crop: CropRule, num_points: int, flip_perm, flip: bool = True):
        path = init_path(name)
        state = load_checkpoint(path)  # weights_only, fields checked
        if state["num_points"] != num_points:
            raise ConfigError(f"teacher {name}: {path} predicts {state['num_points']} points, the data has {num_points}")
        if CropRule(**state["crop"]).to_dict() != crop.to_dict():
            raise ConfigError(f"teacher {name}: {path} was trained with crop {state['crop']}, this config's crop is "
                              f"{crop.to_dict()}; a teacher must cut faces as the student does")
        self.model, _ = model_from_checkpoint(state)
        self.size, self.flip, self.path = int(state["input_size"]), flip, path
        self.trained_on = state.get("trained_on")  # the faces it learnt from reach the student too
        self.flip_perm = torch.as_tensor(list(flip_perm))
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def points(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, K, 2)`` normalised points for ``(B, 3, S, S)`` input crops."""
        images = images.float()
        if images.shape[-1] != self.size:
            images = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                                     align_corners=False, antialias=True)
        batch = torch.cat([images, images.flip(-1)]) if self.flip else images
        points = self.model.decode(self.model(batch.contiguous())).float()
        if not self.flip:
            return points
        own, mirrored = points.chunk(2)
        mirrored = mirrored[:, self.flip_perm.to(points.device)].clone()
        mirrored[..., 0] = 1.0 - mirrored[..., 0]
        return (own + mirrored) / 2


def merge_records(records: list[dict]) -> dict | None:
    """One ``trained_on`` record holding the faces of every record (init checkpoint and teacher)."""
    if len(records) < 2:
        return records[0] if records else None  # one record stands as it is (its own init history kept)
    keys = sorted({k for r in records for k in r.get("face_keys", [])})
    return {"stores": [s for r in records for s in r.get("stores", [])], "face_keys": keys, "faces": len(keys)}


def distil_targets(labels: torch.Tensor, teacher_points: torch.Tensor, weight: float) -> torch.Tensor:
    """``(1 - weight) * labels + weight * teacher`` per point; the teacher's point where a label is
    missing (NaN: partial labels), so every point gets a target."""
    mixed = (1 - weight) * labels + weight * teacher_points
    return torch.where(torch.isnan(labels), teacher_points, mixed)


def l2_penalty(model: torch.nn.Module) -> torch.Tensor:
    """sum(w^2)/2 over conv and linear weights (TensorFlow's l2_loss, as the recipe uses)."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    return sum(w.pow(2).sum() for w in weights) / 2


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: LandmarkDataset, batch_size: int = 64) -> np.ndarray:
    """Predictions ``(M, K, 2)`` in original-image pixels for every sample, from its landmark box."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(dataset), batch_size):
        images = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        outputs.append(model.decode(model(images.to(device))).float().cpu().numpy())  # (B, K, 2) in 0..1
    model.train(was_training)
    normalised = np.concatenate(outputs)
    return np.stack([from_crop(p, dataset.crop_box(i)) for i, p in enumerate(normalised)])


def validate(model, dataset: LandmarkDataset) -> float:
    """Mean inter-ocular NME (fraction) on ``dataset``, in original-image pixels (the stored crops,
    not the original images: fast, and without the inference API; ``facemark eval`` scores those)."""
    predictions = predict_dataset(model, dataset)
    gt = np.asarray(dataset.store.points)
    if not np.isnan(gt).any():
        return float(nme(predictions, gt, "inter_ocular", dataset.scheme).mean())
    # partial labels: missing points are left out of each face's NME (metrics.nme); a face missing
    # an eye corner (no normaliser) or every point is left out of the mean
    errors = []
    for p, g in zip(predictions, gt):
        try:
            errors.append(float(nme(p, g, "inter_ocular", dataset.scheme)[0]))
        except ValueError:
            continue
    return float(np.mean(errors)) if errors else float("nan")


class _Stop:
    """Turns SIGINT/SIGTERM into a flag so the loop can checkpoint and exit cleanly."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True


def train(config: TrainConfig, resume: bool = False, max_steps: int | None = None) -> dict:
    """Train per ``config``; returns a summary (steps, best validation NME, paths).

    ``max_steps`` stops early (at a step boundary, with a checkpoint) without changing the
    schedule, which is defined by ``config.steps``.
    """
    # -- processes, devices, threads
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_flush_denormal(True)  # tiny head weights otherwise hit denormals and run several times slower
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    master = rank == 0
    out = Path(config.out)

    # -- data
    data = Path(config.data)
    check_prepared(data)  # split.json, train/ and val/ from one prepare run
    train_set = LandmarkDataset(Store.open(data / "train"), config.input_size, config.crop, config.augment, config.seed)
    val_set = LandmarkDataset(Store.open(data / "val"), config.input_size, config.crop)
    num_points = train_set.store.num_points
    scheme = resolve_scheme(config.scheme, num_points) if config.scheme else train_set.store.scheme
    train_set.scheme = val_set.scheme = scheme  # flips in augmentation, NME normalisation
    if config.batch_size % world:
        raise ValueError(f"config.batch_size {config.batch_size} is not divisible by {world} processes")
    per_rank_batch = config.batch_size // world
    extra_set, extra = None, None
    if config.extra_data:  # pseudo-labelled faces: a fixed share of every batch
        extra_set = LandmarkDataset(Store.open(Path(config.extra_data) / "train"), config.input_size, config.crop,
                                    config.augment, config.seed + 1)
        if extra_set.store.num_points != train_set.store.num_points:
            raise ValueError(f"{config.extra_data}: extra_data has {extra_set.store.num_points} points, "
                             f"{data} has {train_set.store.num_points}")
        extra_set.scheme = train_set.store.scheme if not config.scheme else resolve_scheme(config.scheme, num_points)
        extra = ExtraDraws(len(extra_set), max(1, round(per_rank_batch * config.extra_fraction)), len(train_set),
                           config.seed, rank, world)
        per_rank_batch -= extra.per_batch
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank_batch if per_rank_batch > 0 else 0
    if steps_per_epoch == 0:
        raise ValueError(f"{data / 'train'}: {len(train_set)} faces is fewer than one batch of {config.batch_size}")
    teacher = None
    if config.teacher:
        teacher = Teacher(config.teacher, config.crop, num_points, scheme.flip_perm, config.teacher_flip)
        teacher.model.to(device)
        if master:
            tqdm.write(f"teacher {teacher.path} ({teacher.size} px, flip test {'on' if teacher.flip else 'off'}): "
                       f"targets = {1 - config.teacher_weight:g} x labels + {config.teacher_weight:g} x teacher")
    # the faces the weights see (with those of the init checkpoint and, for a student, the teacher's),
    # kept in the checkpoint so that evaluating the model on them warns (facemark.evaluate)
    earlier = [] if resume else [record for record in (
        load_checkpoint(init_path(config.init)).get("trained_on") if config.init else None,
        teacher.trained_on if teacher is not None else None) if record]
    trained_on = training_record([train_set.store] + ([extra_set.store] if extra_set is not None else []),
                                 merge_records(earlier))

    # -- model, optimizer, schedule
    model_args = {"num_points": num_points, "input_size": config.input_size, **config.model_args}
    torch.manual_seed(config.seed)  # same initial weights in every process and every run
    model = create_model(config.model, **model_args)
    if hasattr(model, "set_mean_shape"):
        model.set_mean_shape(torch.from_numpy(train_set.mean_shape()))
    if config.init and not resume:
        report = init_from_checkpoint(model, config.init, partial=config.init_partial)
        if master:
            tqdm.write(f"init from {report['path']}: copied {len(report['copied'])} tensors, "
                       f"re-initialised {len(report['reinitialised'])}"
                       + (f" ({', '.join(report['reinitialised'])})" if report["reinitialised"] else ""))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    loss_fn = get_loss(config.loss or model.default_loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
    step, best_nme, history = 0, float("inf"), []
    ema = None
    if config.ema:  # averaged weights: validated, saved as the checkpoint's "model", exported
        ema = create_model(config.model, **model_args).to(device, memory_format=memory_format)
        ema.load_state_dict(model.state_dict())
        ema.eval()
    if resume:
        try:
            state = load_checkpoint(out / "last.pt")
        except CheckpointError as err:
            raise CheckpointError(f"cannot resume: {err}") from None
        changes = resume_changes(config, state, model_args, scheme, out / "last.pt")  # before the weights load
        model.load_state_dict(state.get("train_model", state["model"]))  # with EMA, "model" holds the average
        if ema is not None:
            ema.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_nme, history = state["step"], state["best_nme"], state["history"]
        trained_on = state.get("trained_on", trained_on)  # the run's own record (init is not used on resume)
        if any(key in changes for key in _LR_KEYS):  # the new rate from this step on, not the checkpoint's
            scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
            for group in optimizer.param_groups:
                group["initial_lr"], group["lr"] = config.lr, config.lr * lr_factor(config, step)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
        if changes:
            history.append({"step": step, "resumed_with": {key: [was, now] for key, (was, now) in changes.items()}})
            if master:
                tqdm.write(f"resume at step {step}: applying the changed "
                           + "; ".join(f"{key} {was!r} -> {now!r}" for key, (was, now) in changes.items())
                           + (" (init is not used when resuming: the weights come from last.pt)" if "init" in changes
                              else ""))
    raw_model = model
    if distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(name: str) -> None:
        extra_state = {} if ema is None else {"train_model": raw_model.state_dict()}
        save_checkpoint(checkpoint_state(
            raw_model if ema is None else ema, config.model, model_args, config.crop, scheme=scheme,
            config=config_to_dict(config), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            step=step, best_nme=best_nme, history=history, trained_on=trained_on,
            flip_test=not (teacher is not None and teacher.flip), **extra_state,  # the spec: one pass when distilled
        ), out / name)

    writer = None
    if master:
        from torch.utils.tensorboard import SummaryWriter

        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):  # left by a run killed mid-write (kill -9)
            tqdm.write(f"removed {stale.name}, a temporary file of an interrupted run")
        write_atomic(out / "config.json", json.dumps(config_to_dict(config), indent=1))
        writer = SummaryWriter(str(out / "tb"), purge_step=step)
    stopper = _Stop()
    end_step = min(config.steps, max_steps or config.steps)
    deadline = time.time() + config.time_limit_min * 60 if config.time_limit_min else float("inf")
    bar = tqdm(total=end_step, initial=step, desc="train", unit="step", disable=not master, dynamic_ncols=True)

    # -- the loop: one loader for the whole run (worker processes start once, not every epoch);
    # its batches name (epoch, index), so resuming mid-epoch draws the same data
    loader = DataLoader(train_set if extra_set is None else Mixed(train_set, extra_set),
                        batch_sampler=epoch_batches(sampler, per_rank_batch, steps_per_epoch, step, extra),
                        num_workers=config.workers, pin_memory=device.type == "cuda")
    for images, targets, _ in loader if step < end_step else ():
        model.train()
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout draws depend on the step only
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        if teacher is not None:
            targets = distil_targets(targets, teacher.points(images), config.teacher_weight)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda"):
            raw = model(images)
        data_loss = loss_fn(raw_model, raw, targets)
        loss = data_loss + config.l2 * l2_penalty(raw_model) if config.l2 else data_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            update_ema(ema, raw_model, config.ema, step)
        step += 1
        bar.update(1)
        if master and (step % config.log_every == 0 or step == end_step):
            lr = scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{data_loss.item():.4g}", lr=f"{lr:.2e}")
            writer.add_scalar("train/loss", data_loss.item(), step)
            writer.add_scalar("train/lr", lr, step)
            history.append({"step": step, "loss": data_loss.item(), "lr": lr})
        if master and (step % config.val_every == 0 or step == config.steps):
            val_nme = validate(raw_model if ema is None else ema, val_set)
            writer.add_scalar("val/nme_inter_ocular", val_nme, step)
            history.append({"step": step, "val_nme": val_nme})
            tqdm.write(f"step {step}: validation NME {100 * val_nme:.3f} % "
                       f"({describe('inter_ocular', scheme, NME_BOX)})")
            if val_nme < best_nme:
                best_nme = val_nme
                checkpoint("best.pt")
        if master and (step % config.ckpt_every == 0 or step == end_step):
            checkpoint("last.pt")
        stopper.requested |= time.time() > deadline
        if step >= end_step or stopper.requested:
            break
    del loader  # stop the workers
    bar.close()
    if master:
        checkpoint("last.pt")
        writer.close()
        _plot_history(history, out)
    if distributed:
        for buffer in raw_model.buffers():  # batch-norm statistics drift per rank; keep rank 0's
            dist.broadcast(buffer, 0)
        dist.barrier()
        # drop DDP's reducer while the process group lives on: freed later, at the function's exit,
        # it destroyed the gloo group with the GIL held while a gloo thread waited for the GIL to
        # free its last work (a deadlock that hung some runs at exit)
        del model
        gc.collect()
        dist.destroy_process_group()
    return {"step": step, "best_nme": best_nme, "out": str(out), "interrupted": stopper.requested,
            "model": raw_model if ema is None else ema,
            "normalisation": describe("inter_ocular", scheme, NME_BOX)}  # what best_nme is a fraction of


def _plot_history(history: list[dict], out: Path) -> None:
    train_rows = [h for h in history if "loss" in h]
    val_rows = [h for h in history if "val_nme" in h]
    if train_rows:
        plot_loss_curve(
            [h["step"] for h in train_rows], [h["loss"] for h in train_rows], out / "loss_curve.png",
            val_steps=[h["step"] for h in val_rows], val_values=[h["val_nme"] for h in val_rows],
        )

"""Shared fixtures: real 300w-lite faces when ../shared is present, synthetic faces otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

SHARED = Path(os.environ.get("FACEMARK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LITE = SHARED / "data" / "300w-lite"


def pytest_configure(config):
    import torch

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def lite_root() -> Path:
    if not LITE.is_dir():
        pytest.skip(f"{LITE} not present")
    return LITE


def synthetic_face(rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A drawn 'face' (ellipse, eyes, mouth) and 68 points placed on its features."""
    from facemark.schemes import get_scheme

    image = np.full((size, size, 3), rng.integers(40, 90), np.uint8)
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    rx, ry = size * rng.uniform(0.22, 0.28), size * rng.uniform(0.28, 0.34)
    cv2.ellipse(image, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, (150, 170, 200), -1)
    points = np.zeros((68, 2), np.float32)
    t = np.linspace(np.pi, 0, 17)  # jaw: lower half of the ellipse, image left to image right
    points[:17] = np.stack([cx + rx * np.cos(t), cy + ry * 0.9 * np.sin(t) - 0.1 * ry], 1)
    scheme = get_scheme(68)
    rest = scheme.groups
    eye_y = cy - ry * 0.2
    for group, x_centre in (("right_eye", cx - rx * 0.45), ("left_eye", cx + rx * 0.45)):
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi
        points[list(rest[group])] = np.stack([x_centre + rx * 0.2 * np.cos(a), eye_y + ry * 0.06 * np.sin(a)], 1)
        cv2.circle(image, (int(x_centre), int(eye_y)), int(rx * 0.12), (30, 30, 30), -1)
    for group, x_centre in (("right_brow", cx - rx * 0.45), ("left_brow", cx + rx * 0.45)):
        points[list(rest[group])] = np.stack([x_centre + np.linspace(-0.25, 0.25, 5) * rx, np.full(5, eye_y - ry * 0.2)], 1)
    nose = list(rest["nose_bridge"]) + list(rest["nostrils"])
    points[nose[:4]] = np.stack([np.full(4, cx), np.linspace(eye_y, cy + ry * 0.2, 4)], 1)
    points[nose[4:]] = np.stack([cx + np.linspace(-0.15, 0.15, 5) * rx, np.full(5, cy + ry * 0.25)], 1)
    mouth_y = cy + ry * 0.5
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False) + np.pi
    points[48:60] = np.stack([cx + rx * 0.4 * np.cos(a), mouth_y + ry * 0.1 * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi
    points[60:68] = np.stack([cx + rx * 0.3 * np.cos(a), mouth_y + ry * 0.04 * np.sin(a)], 1)
    cv2.ellipse(image, (int(cx), int(mouth_y)), (int(rx * 0.4), int(ry * 0.1)), 0, 0, 360, (60, 60, 160), -1)
    return image, points


@pytest.fixture
def synthetic_dataset(tmp_path) -> Path:
    """A folder of 40 synthetic faces in 300-W .pts format."""
    from facemark.data.formats import write_pts

    rng = np.random.default_rng(0)
    root = tmp_path / "synth" / "faces"
    root.mkdir(parents=True)
    for i in range(40):
        image, points = synthetic_face(rng)
        cv2.imwrite(str(root / f"face{i:03d}_1.png"), image)
        write_pts(root / f"face{i:03d}_1.pts", points)
    return tmp_path / "synth"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained 68-point checkpoint (small seed_senet, 64x64 input) in facemark's format."""
    import torch

    from facemark.checkpoint import checkpoint_state, save_checkpoint
    from facemark.geometry import CropRule
    from facemark.models import create_model

    torch.manual_seed(0)
    args = {"num_points": 68, "input_size": 64}
    model = create_model("seed_senet", **args).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(checkpoint_state(model, "seed_senet", args, CropRule(clip=False), step=0, best_nme=None), path)
    return path


@pytest.fixture
def small_run(synthetic_dataset, tmp_path):
    """A prepared synthetic store and a config for a tiny, fast run."""
    from facemark.data.prepare import prepare

    prepare(synthetic_dataset, tmp_path / "data", size=64, context=1.5, progress=False)

    def make(out: str, **extra) -> Path:
        values = {
            "data": str(tmp_path / "data"), "out": str(tmp_path / out), "model": "seed_senet",
            "input_size": 48, "batch_size": 8, "steps": 8, "val_every": 4, "ckpt_every": 4, "log_every": 2,
            "lr_decay_steps": 3, "num_threads": 1, "augment": {"rotate": 10.0}, **extra,
        }
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    return make


def run_helps(package: str, names: list[str]) -> dict:
    """``python -m <package>.<name> --help`` of every name, run side by side from the repository root
    (each starts its own Python): ``{name: CompletedProcess}``."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    running = {name: subprocess.Popen([sys.executable, "-m", f"{package}.{name}", "--help"], cwd=root, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in names}
    done = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


def kill_after_parts(process, out: Path, parts: int = 2, timeout: float = 60.0) -> None:
    """``kill -9`` the ``facemark bulk`` run of ``process`` once ``out`` holds ``parts`` part files (or it
    ended, or ``timeout`` seconds passed), and wait for it: a crash in the middle of a run."""
    import signal
    import time

    from facemark.bulk import part_files

    try:
        deadline = time.monotonic() + timeout
        while len(part_files(out)) < parts and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()


def count_crops(monkeypatch, landmarker) -> list[int]:
    """Spy on ``landmarker``'s model: the returned list gets the crop count of every model call
    (plain and with features: quality needs them)."""
    run, batches = landmarker._run, []

    class Spy:
        def __call__(self, batch):
            batches.append(len(batch))
            return run(batch)

        def run_with_features(self, batch):
            batches.append(len(batch))
            return run.run_with_features(batch)

    monkeypatch.setattr(landmarker, "_run", Spy())
    return batches

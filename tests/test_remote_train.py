"""tools/remote_train.py: the schedule it sets from the probe, and its refusal to touch local data."""

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "remote_train.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("remote_train", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schedule_fits_the_time_left(tool):
    # 39.2 steps/s probed, 480 s left: 0.9 * 39.2 * 450 = 15,876 -> 15,500 (whole 500s)
    assert tool.schedule_steps(39.2, 480, 60000) == 15500
    assert tool.schedule_steps(39.2, 480, 8000) == 8000  # the cap
    assert tool.schedule_steps(2.0, 200, 60000) == 306  # short: not rounded
    assert tool.schedule_steps(50.0, 20, 60000) == 0  # no time: nothing, never negative


def test_refuses_to_overwrite_local_stores(tool, tmp_path, monkeypatch):
    """It unpacks into data/300w-lite*: where those are a developer's own stores, it stops first."""
    (tmp_path / "data" / "300w-lite").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--overwrite-data"):
        tool.prepare_data(tmp_path / "packed", overwrite=False)
    assert not any((tmp_path / "data").glob("300w-lite-all*"))

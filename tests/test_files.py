"""Atomic writes (the folder flushed too) and stale temporaries (the image loader: tests/test_images.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from facemark.files import atomic_path, remove_stale_temporaries, write_atomic


def _dead_pid() -> int:
    """The pid of a process that has exited (reused only after the pid space wraps around)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_atomic_write_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_atomic(tmp_path / "a.json", "{}")
    assert synced == [False, True]  # the file, then the folder that holds the rename
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".last.tmp-{dead}-139872.pt"  # what kill -9 during save_checkpoint leaves
    stale_file.write_bytes(bytes(100))
    stale_store = tmp_path / f".train.tmp-{dead}"
    (stale_store / "sub").mkdir(parents=True)
    mine = tmp_path / f".best.tmp-{os.getpid()}-1.pt"  # a write in progress in this process
    mine.write_bytes(b"x")
    keep = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / f".x.tmp-{dead}-1.pt.bak-notes"]
    for path in keep:
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_store])
    assert sorted(tmp_path.iterdir()) == sorted([mine, *keep])


def test_an_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []

"""Checkpoints: crafted or foreign files are one-line errors naming the file and the field."""

from __future__ import annotations

import pytest
import torch

from facemark.checkpoint import CheckpointError, load_checkpoint
from facemark.cli import main


def _crafted(tiny_checkpoint, tmp_path, edit) -> str:
    state = torch.load(tiny_checkpoint, weights_only=True)
    edit(state)
    path = tmp_path / "crafted.pt"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize(("edit", "words"), [
    (lambda s: s.pop("model_args"), "checkpoint field 'model_args' is missing"),
    (lambda s: s.update(model_args="68 points"), "checkpoint field 'model_args' is a str, expected a dict"),
    (lambda s: s["model_args"].pop("input_size"), "checkpoint field 'model_args.input_size' is missing"),
    (lambda s: s["model_args"].update(num_points="many"), "model_args.num_points = 'many': Input should be a valid integer"),
    (lambda s: s.pop("crop"), "checkpoint field 'crop' is missing"),
    (lambda s: s["crop"].update(top="high"), "crop.top = 'high': Input should be a valid number"),
    (lambda s: s.update(model_name="nope"), "checkpoint field 'model_name' = 'nope' is not a known model"),
    (lambda s: s["model_args"].update(num_points=5), "checkpoint field 'model' does not fit seed_senet"),
])
def test_crafted_checkpoints_name_file_and_field(tiny_checkpoint, tmp_path, capsys, edit, words):
    path = _crafted(tiny_checkpoint, tmp_path, edit)
    with pytest.raises(CheckpointError, match=words) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    # the command line: one line on stderr and a non-zero exit, no traceback
    assert main(["predict", "--sample", "--model", path, "--backend", "torch", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("facemark: error: ") and path in error and "\n" not in error


def test_a_good_checkpoint_still_loads(tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    assert state["model_args"] == {"num_points": 68, "input_size": 64} and state["crop"]["clip"] is False


def test_a_write_that_fails_while_checkpointing_is_one_line(tiny_checkpoint, tmp_path):
    """A full disk while checkpointing printed torch's "inline_container.cc" error. Here the write
    fails as on a full disk, for real: the file size limit (RLIMIT_FSIZE) stops it part-way."""
    import resource
    import signal

    from facemark.checkpoint import save_checkpoint

    state = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "last.pt"
    save_checkpoint(state, path)  # the previous checkpoint
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(CheckpointError) as err:
            save_checkpoint(state, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot write the checkpoint (") and "MB free on its disk" in message
    assert "\n" not in message and "inline_container" not in message
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class _Payload:
    """A pickle that would run a command when loaded without ``weights_only``."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("kind", ["torch.save", "plain pickle"])
def test_a_malicious_pickle_is_refused_in_one_line_naming_the_file(tmp_path, capsys, kind):
    import pickle

    path = tmp_path / "evil.pt"
    if kind == "torch.save":
        torch.save({"model": _Payload(), "model_name": "seed_senet"}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(), protocol=4))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused: it holds Python objects") and "\n" not in message
    assert main(["predict", "--sample", "--model", str(path), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"facemark: error: {path}: refused"), lines

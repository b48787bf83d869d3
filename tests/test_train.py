"""Training machinery: exact resume after SIGKILL, clean errors, DDP with two CPU processes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from facemark.checkpoint import CheckpointError, load_checkpoint
from facemark.config import load_config
from facemark.train import lr_factor, train

REPO = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, **kw)


def test_resume_after_sigkill_gives_identical_weights(small_run, tmp_path):
    straight = load_config(small_run("straight"))
    train(straight)
    # same run, killed with SIGKILL right after the periodic checkpoint at step 4
    killed_cfg = small_run("killed")
    script = textwrap.dedent(f"""
        import os, signal
        import facemark.train as t
        from facemark.config import load_config
        original = t.save_checkpoint
        def save_then_die(state, path):
            original(state, path)
            if str(path).endswith("last.pt") and state["step"] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        t.save_checkpoint = save_then_die
        t.train(load_config({str(killed_cfg)!r}))
    """)
    result = _run(["-c", script])
    assert result.returncode == -9, result.stderr[-2000:]
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 4
    summary = train(load_config(killed_cfg), resume=True)
    assert summary["step"] == 8
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["best_nme"] == b["best_nme"]
    assert (tmp_path / "straight" / "loss_curve.png").stat().st_size > 0
    assert list((tmp_path / "straight" / "tb").iterdir())


def test_loader_workers_and_mid_epoch_resume_draw_the_same_batches(small_run, tmp_path):
    """One loader spans every epoch; with worker processes, and resumed at a step inside an epoch,
    training sees the same batches as a straight single-process run."""
    straight = train(load_config(small_run("plain", batch_size=4, steps=9)))
    workers = load_config(small_run("workers", batch_size=4, steps=9, workers=2))
    train(workers, max_steps=5)
    assert train(workers, resume=True)["step"] == 9
    a, b = straight["model"].state_dict(), load_checkpoint(tmp_path / "workers" / "last.pt")["model"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_corrupt_checkpoint_is_a_clear_error(small_run, tmp_path):
    config = load_config(small_run("corrupt", steps=4))
    train(config)
    last = tmp_path / "corrupt" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(config, resume=True)
    with pytest.raises(CheckpointError, match="not found"):
        train(load_config(small_run("never-ran")), resume=True)


def test_recipe_schedule():
    config = load_config(REPO / "configs" / "300w_seed_senet_128.yaml")
    assert config.lr == 1e-3 and config.l2 == 1e-5 and config.model == "seed_senet"
    assert lr_factor(config, 999) == 1.0 and lr_factor(config, 1000) == pytest.approx(0.98)
    assert lr_factor(config, 5500) == pytest.approx(0.98**5)


def test_ddp_two_processes_hold_identical_weights(small_run, tmp_path):
    config = small_run("ddp", steps=4)
    script = tmp_path / "ddp_script.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from facemark.config import load_config
        from facemark.train import train
        summary = train(load_config({str(config)!r}))
        torch.save(summary["model"].state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    result = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)])
    assert result.returncode == 0, result.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["step"] == 4


def test_channels_last_training_matches_the_contiguous_run(small_run, tmp_path):
    """channels_last changes memory layout only: the same losses, and weights that differ by no
    more than Adam's step size allows (Adam turns float rounding in tiny gradients into full steps)."""
    plain = train(load_config(small_run("plain", steps=4, model="pipnet_resnet", input_size=64,
                                        model_args={"width": 0.25})))
    nhwc = train(load_config(small_run("nhwc", steps=4, model="pipnet_resnet", input_size=64,
                                       model_args={"width": 0.25}, channels_last=True)))
    assert plain["step"] == nhwc["step"] == 4
    losses = [[h["loss"] for h in load_checkpoint(tmp_path / run / "last.pt")["history"] if "loss" in h]
              for run in ("plain", "nhwc")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)  # float rounding differs between layouts and CPUs
    a, b = dict(plain["model"].named_parameters()), dict(nhwc["model"].named_parameters())
    for name in a:
        torch.testing.assert_close(a[name].detach(), b[name].detach(), rtol=0, atol=4 * 2 * 1e-3, msg=name)
    # the checkpoint loads into a plain (contiguous) model for export and inference
    from facemark.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(tmp_path / "nhwc" / "last.pt")
    assert model(torch.zeros(1, 3, 64, 64))["score"].shape[0] == 1


def test_a_run_cleans_what_a_killed_run_left_and_writes_its_files_atomically(small_run, tmp_path, monkeypatch):
    """After kill -9 in the middle of a checkpoint write, the temporary file used to stay forever."""
    import facemark.files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "cleaned"
    out.mkdir()
    orphan = out / f".last.tmp-{int(dead.stdout)}-140000.pt"
    orphan.write_bytes(bytes(5000))
    written, atomic_path = [], facemark.files.atomic_path

    def recording(path):
        written.append(Path(path).name)
        return atomic_path(path)

    monkeypatch.setattr(facemark.files, "atomic_path", recording)
    train(load_config(small_run("cleaned", steps=2, val_every=2, ckpt_every=2)))
    assert not orphan.exists()
    assert "config.json" in written
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("overrides, words", [
    (["model=pipnet_resnet", "model_args={width: 0.25}", "input_size=64"],
     "cannot resume with a changed model 'seed_senet' -> 'pipnet_resnet'"),
    (["crop.top=0.25"], "cannot resume with a changed crop {'top': 0.3"),
    (["batch_size=4"], "cannot resume with a changed batch_size 8 -> 4"),
], ids=["model", "crop", "batch-size"])
def test_resume_refuses_a_changed_model_or_crop_in_one_line(small_run, tmp_path, overrides, words):
    """A changed model printed an 81-line state_dict error; a changed crop was applied mid-run without a word."""
    path = small_run("fixed")
    train(load_config(path), max_steps=4)
    with pytest.raises(CheckpointError) as err:
        train(load_config(path, overrides), resume=True)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'fixed' / 'last.pt'}: ") and words in message and "\n" not in message
    assert load_checkpoint(tmp_path / "fixed" / "last.pt")["step"] == 4  # nothing trained


def test_resume_applies_a_changed_lr_says_so_and_records_it(small_run, tmp_path, capsys):
    """`--set lr=0.5` on resume was silently ignored while config.json recorded 0.5."""
    import json

    path = small_run("lr")
    train(load_config(path), max_steps=4)
    config = load_config(path, ["lr=0.5"])
    assert train(config, resume=True)["step"] == 8
    state = load_checkpoint(tmp_path / "lr" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 * lr_factor(config, 8))
    assert json.loads((tmp_path / "lr" / "config.json").read_text())["lr"] == state["config"]["lr"] == 0.5
    assert {"step": 4, "resumed_with": {"lr": [0.001, 0.5]}} in state["history"]
    captured = capsys.readouterr()
    assert "resume at step 4: applying the changed lr 0.001 -> 0.5" in captured.out + captured.err


def test_the_checkpoint_records_the_faces_it_was_trained_on_and_export_keeps_it(small_run, tmp_path):
    """What a model was trained on travels with it (checkpoint, inference .pt, ONNX), with the faces
    its init checkpoint saw, so that evaluation on them can warn (test_evaluate.py)."""
    from facemark.data.faces import face_key
    from facemark.data.store import Store
    from facemark.export import export_inference_checkpoint, export_onnx
    from facemark.runtime import open_model

    train(load_config(small_run("first", steps=2, val_every=2, ckpt_every=2)))
    store = Store.open(tmp_path / "data" / "train")
    record = load_checkpoint(tmp_path / "first" / "last.pt")["trained_on"]
    assert record["face_keys"] == sorted(face_key(s["id"]) for s in store.samples) and record["faces"] == len(store)
    assert record["stores"] == [{"path": str(store.path), "checksum": store.index["checksum"],
                                 "prepared": store.index["prepared"], "faces": len(store)}]
    val_ids = {face_key(s["id"]) for s in Store.open(tmp_path / "data" / "val").samples}
    assert not val_ids & set(record["face_keys"])  # the validation faces are not trained on
    for path in (export_inference_checkpoint(tmp_path / "first" / "last.pt", tmp_path / "first.pt"),
                 export_onnx(tmp_path / "first" / "last.pt", tmp_path / "first.onnx")):
        assert open_model(path).meta["trained_on"] == record

    import torch

    state = torch.load(tmp_path / "first" / "last.pt", weights_only=True)
    state["trained_on"]["face_keys"].append("0123456789ab")  # a face only the init model saw
    torch.save(state, tmp_path / "init.pt")
    train(load_config(small_run("second", steps=2, val_every=2, ckpt_every=2, init=str(tmp_path / "init.pt"))))
    second = load_checkpoint(tmp_path / "second" / "last.pt")["trained_on"]
    assert second["faces"] == len(store) + 1 and "0123456789ab" in second["face_keys"]
    assert second["init"] == {"stores": record["stores"]}


def test_loss_curve_nme_tick_labels_are_distinct(tmp_path, monkeypatch):
    """Validation NME that moves by hundredths of a percent: every tick label on the NME axis differs
    (one decimal fixed used to print 3.5 % four times)."""
    from facemark import plots

    figures = []
    save = plots._save_atomic
    monkeypatch.setattr(plots, "_save_atomic", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    steps = list(range(50, 6001, 50))
    plots.plot_loss_curve(steps, [0.5 / (1 + s / 1000) for s in steps], tmp_path / "loss.png",
                          val_steps=[1000, 2000, 3000, 4000, 5000, 6000],
                          val_values=[0.0352, 0.0347, 0.0344, 0.0342, 0.0341, 0.0340])
    [figure] = figures
    figure.canvas.draw()
    nme_axis = figure.axes[1]
    low, high = nme_axis.get_ylim()
    labels = [t.get_text() for t in nme_axis.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels

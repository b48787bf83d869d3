"""The command line explains itself: defaults in every option's help, detector choices, --print-config."""

from __future__ import annotations

import argparse

import pytest
import yaml

from facemark.cli import build_parser, main
from facemark.config import load_config, settable_keys
from facemark.detectors import DEFAULT_DETECTOR, list_detectors


def _parsers(parser: argparse.ArgumentParser, name: str = "facemark"):
    yield name, parser
    for action in parser._actions:  # argparse has no public accessor for sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def _option_entries(text: str) -> dict[str, str]:
    """The options of a rendered ``--help``: ``{"--flag": its whole entry, wrapped lines joined}``."""
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):  # "  -x, --long VALUE   help ...": a new option
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("   "):  # the entry's help, wrapped
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_every_option_says_its_default():
    """What a user reads: every option in every command's rendered --help ends with its default."""
    for name, parser in _parsers(build_parser()):
        entries = _option_entries(parser.format_help())
        options = [a.option_strings[0] for a in parser._actions
                   if a.option_strings and not isinstance(a, argparse._HelpAction)]
        assert sorted(entries) == sorted(["-h", *options]), name  # every option is in the text
        for option, entry in entries.items():
            assert option in ("-h", "--version") or "(default" in " ".join(entry.split()), f"{name} {option}: {entry!r}"


def test_detector_option_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in list_detectors()) and f"(default: {DEFAULT_DETECTOR})" in out
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--sample", "--detector", "nope"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_print_config_shows_the_resolved_config_and_every_settable_key(capsys, tmp_path):
    assert main(["train", "--print-config", "--config", "configs/300w_pipnet_resnet_128.yaml", "--set", "crop.top=0.25"]) == 0
    text = capsys.readouterr().out
    resolved = yaml.safe_load(text)
    assert resolved["model"] == "pipnet_resnet" and resolved["crop"]["top"] == 0.25
    keys = [line.strip("# ").strip() for line in text.splitlines() if line.startswith("#   ")]
    config = load_config("configs/300w_pipnet_resnet_128.yaml")
    assert keys == settable_keys(config) and {"crop.top", "augment.rotate", "model_args.width", "lr"} <= set(keys)
    # what it prints loads back as the same config
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(tmp_path / "c.yaml") == load_config("configs/300w_pipnet_resnet_128.yaml", ["crop.top=0.25"])
    assert main(["train", "--print-config"]) == 0 and "seed_senet" in capsys.readouterr().out  # the defaults


@pytest.fixture
def no_server(monkeypatch):
    """uvicorn.run fails the test: these commands must stop before a server starts."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("the server started"))


@pytest.mark.parametrize("argv, option", [
    (["serve", "--max-upload-mb", "nan"], "--max-upload-mb"),
    (["serve", "--max-upload-mb", "inf"], "--max-upload-mb"),
    (["serve", "--port", "99999"], "--port"),
    (["serve", "--upload-timeout", "nan"], "--upload-timeout"),
    (["data", "preview", "store", "--count", "-5"], "--count"),
    (["predict", "--sample", "--min-quality", "nan"], "--min-quality"),
    (["serve", "--min-quality", "1.5"], "--min-quality"),
], ids=["upload-nan", "upload-inf", "port-99999", "timeout-nan", "count-minus-5", "quality-nan", "quality-1.5"])
def test_bad_numbers_are_refused_by_the_parser(argv, option, capsys, no_server):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {option}: " in capsys.readouterr().err


def test_serve_with_a_bad_model_is_one_line_before_the_server_starts(tmp_path, exported_bad_scheme, capsys, no_server):
    """`serve --model /tmp` gave a 24-line uvicorn traceback; a model file whose scheme names a path
    was read at start-up."""
    for model, words in ((tmp_path, "model file not found"), (exported_bad_scheme, "never a path")):
        assert main(["serve", "--model", str(model)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"facemark: error: {model}: ") and words in err[0]


@pytest.fixture
def exported_bad_scheme(tiny_checkpoint, tmp_path):
    import json

    import onnx

    out = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_checkpoint), "--onnx", str(out)]) == 0
    graph = onnx.load(str(out))
    meta = json.loads(graph.metadata_props[0].value)
    meta["scheme"] = "/dev/zero"
    graph.metadata_props[0].value = json.dumps(meta)
    onnx.save(graph, str(out))
    return out


@pytest.mark.parametrize("flag, value", [("--jitter", "nan"), ("--jitter", "-1"), ("--max-error", "nan")])
def test_eval_settings_are_checked_before_the_model_loads(flag, value, capsys, monkeypatch):
    import facemark.cli

    monkeypatch.setattr(facemark.cli, "load_predictor", lambda *args, **kwargs: pytest.fail("the model loaded"))
    assert main(["eval", "--model", "default", "--data", "data/x", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag[2:].replace('-', '_')} must be in " in err[0] and f"got {float(value)!r}" in err[0]


def test_max_mpx_sets_the_pixel_cap_of_every_command(tmp_path, tiny_checkpoint, capsys):
    """The service's 40-Mpx limit, configurable, everywhere: here predict with a 0.01 Mpx cap."""
    import json

    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((120, 100, 3), np.uint8))
    (tmp_path / "boxes.json").write_text("[[20, 20, 80, 100]]")
    argv = ["predict", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
            "--backend", "torch", "--boxes", str(tmp_path / "boxes.json")]
    assert main(["--max-mpx", "0.01", *argv]) == 1
    (skip,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["skipped"]
    assert skip["reason"].endswith("100x120 (0.012 Mpx) is over the 0.01 Mpx limit (facemark --max-mpx sets it)")
    assert main(argv) == 0  # the default, 40 Mpx
    with pytest.raises(SystemExit):
        main(["--max-mpx", "nan", *argv])
    video = tmp_path / "clip.mp4"  # a video's frame size is checked before its frames are read
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (100, 120))
    writer.write(np.zeros((120, 100, 3), np.uint8))
    writer.release()
    assert main(["--max-mpx", "0.01", *argv[:1], str(video), *argv[2:]]) == 1
    (skip,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["skipped"]
    assert skip["path"] == str(video) and "100x120 (0.012 Mpx) is over the 0.01 Mpx limit" in skip["reason"]


def test_version_comes_from_one_place(capsys):
    import tomllib
    from pathlib import Path

    import facemark
    from facemark._version import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"facemark {__version__}"
    assert facemark.__version__ is __version__
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "facemark._version.__version__"}


def test_ctrl_c_anywhere_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import facemark.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(facemark.cli, "compare", interrupted)
    monkeypatch.setattr(facemark.cli, "prepare", interrupted)
    for argv in (["eval", "--compare", "x.json"], ["data", "prepare", str(tmp_path), "--out", str(tmp_path / "o")]):
        assert main(argv) == 130
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "interrupted (Ctrl-C)" in err and "Traceback" not in err, err


def test_build_parser_is_one_small_builder_per_command():
    import inspect

    import facemark.cli

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in commands:
        builder = getattr(facemark.cli, f"_add_{name}")
        assert len(inspect.getsource(builder).splitlines()) <= 40, name
    assert len(inspect.getsource(build_parser).splitlines()) <= 20

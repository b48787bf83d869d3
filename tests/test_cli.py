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


def test_every_option_says_its_default():
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            help_text = parser._get_formatter()._get_help_string(action)
            assert "(default" in help_text, f"{name} {action.option_strings[0]}: {help_text!r}"
        assert text


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

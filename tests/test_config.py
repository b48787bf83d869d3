import pytest

from facemark.config import ConfigError, load_config


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: seed_senet\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        load_config(path)


def test_nested_unknown_key_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("augment:\n  rotate: 10\n  spin: 3\n")
    with pytest.raises(ConfigError, match=r"augment: unknown key 'spin'"):
        load_config(path)
    path.write_text("augment:\n  rotate: 10\n")
    config = load_config(path, ["steps=7", "crop.clip=false", "augment.flip=false"])
    assert config.steps == 7 and config.crop.clip is False and config.augment.rotate == 10 and not config.augment.flip


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")

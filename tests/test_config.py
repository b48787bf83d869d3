import re

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


@pytest.mark.parametrize(("override", "words"), [
    ("batch_size=-3", "batch_size = -3: Input should be greater than or equal to 1"),  # used to hang at step 0
    ("batch_size=0", "batch_size = 0: Input should be greater than or equal to 1"),
    ("lr=fast", "lr = 'fast': Input should be a valid number"),
    ("steps=abc", "steps = 'abc': Input should be a valid integer"),
    ("ckpt_every=0", "ckpt_every = 0: Input should be greater than or equal to 1"),
    ("model_args.width=foo", "model_args.width = 'foo': Input should be a valid number"),
    ("schedule=weird", "schedule = 'weird': Input should be 'exponential', 'cosine' or 'step'"),
    ("augment.rotate=[1]", "augment.rotate = [1]: Input should be a valid number"),
    ("lr_milestones=[0.5,2]", "lr_milestones.1 = 2: Input should be less than or equal to 1"),
    ("model=nope", "model = 'nope': unknown model (known: "),
    ("model_args.depth=3", "'depth': 3}: pipnet_resnet cannot be built with these"),
    ("loss=fancy", "loss = 'fancy': unknown loss"),
])
def test_bad_values_are_one_line_errors_at_load_time(tmp_path, override, words):
    path = tmp_path / "c.yaml"
    path.write_text("model: pipnet_resnet\nmodel_args:\n  width: 0.5\n")
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        load_config(path, [override])
    # the value at fault came from the command line: the error names it, not the YAML file
    assert str(err.value).startswith(f"--set {override}: ") and "\n" not in str(err.value)


def test_an_error_names_where_the_bad_value_came_from(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: pipnet_resnet\nbatch_size: -3\naugment:\n  rotate: 10\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: batch_size = -3: Input should be")):
        load_config(path, ["lr=0.01"])  # the file's value, whatever else was set
    path.write_text("model: pipnet_resnet\n")
    with pytest.raises(ConfigError, match=re.escape("--set augment.spin=2: augment: unknown key 'spin'")):
        load_config(path, ["lr=0.01", "augment.spin=2"])
    with pytest.raises(ConfigError, match=re.escape("--set steps: not key=value")):
        load_config(path, ["steps"])
    with pytest.raises(ConfigError, match=re.escape("--set batch_size=-3: batch_size = -3")):
        load_config(None, ["batch_size=-3"])


def test_values_are_converted_to_their_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: pipnet_resnet\nlr: 1e-3\nmodel_args:\n  width: 1\naugment:\n  scale: [0.9, 1.1]\n")
    config = load_config(path)  # YAML reads 1e-3 as a string: it is a valid number all the same
    assert config.lr == 0.001 and config.model_args == {"width": 1.0} and config.augment.scale == (0.9, 1.1)


def test_every_shipped_training_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("300w_*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize(("override", "words"), [
    ("crop.top=.nan", "crop.top = nan: expected a number in -0.5..2.0"),  # trained to the end; predict could not use it
    ("crop.top=-5", "crop.top = -5.0: expected a number in -0.5..2.0"),
    ("crop.top=1e308", "crop.top = 1e+308: expected a number in -0.5..2.0"),
    ("crop.side=-0.4", "crop.side = -0.4: the crop box would be 0.2x the landmark box's width"),
    ("augment.rotate=.nan", "augment.rotate = nan: expected a number in 0.0..180.0"),
    ("augment.scale=[0.9,.inf]", "augment.scale = (0.9, inf): expected two numbers in 0.1..10.0"),
    ("augment.scale=[1.2,0.8]", "augment.scale = (1.2, 0.8): expected (smallest, largest)"),
    ("augment.box_jitter=0.5", "augment.box_jitter = 0.5: expected a number in 0.0..0.4"),
    ("augment.occlusion=2", "augment.occlusion = 2.0: expected a number in 0.0..1.0"),
    ("lr=1e308", "lr = '1e308': Input should be less than or equal to 1"),
    ("lr_decay=.nan", "lr_decay = nan: Input should be a finite number"),
    ("model_args.width=.inf", "model_args.width = inf: expected a finite number"),
], ids=lambda v: v if "=" in v else "")
def test_every_float_is_range_checked(tmp_path, override, words):
    path = tmp_path / "c.yaml"
    path.write_text("model: pipnet_resnet\nmodel_args:\n  width: 0.5\naugment:\n  rotate: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert str(err.value).startswith(f"--set {override}: {words}"), str(err.value)
    assert "\n" not in str(err.value)


#: "billion laughs": ten levels of ten aliases, 10**10 leaves once expanded
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else 'lol'}]\n" for i in range(10))


def test_alias_bomb_under_model_args_is_refused_at_once(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text("model: seed_senet\nmodel_args:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines()))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - start < 1
    message = str(err.value)
    assert message.startswith(f"{path}: YAML anchors and aliases") and "line 3" in message and "\n" not in message


def test_any_alias_in_a_config_or_an_override_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("crop: &c {top: 0.2}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: YAML anchors and aliases \(& and \*\) are not accepted \(line 1\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^--set model_args.x=\[&a \[1\], \*a\]: YAML anchors"):
        load_config(None, ["model_args.x=[&a [1], *a]"])
    path.write_text("steps: [1\n")  # broken YAML: one line, naming the file
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML: .*\(line 2\)$"):
        load_config(path)


def test_every_yaml_read_goes_through_the_one_loader():
    """No ``yaml.safe_load``/``yaml.load`` outside :func:`facemark.schemes.parse_yaml` (facemark, tools, bench)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{p.relative_to(root)}:{n}" for folder in ("facemark", "tools", "bench") for p in (root / folder).rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if ("yaml.safe_load(" in line or "yaml.load(" in line or "yaml.full_load(" in line)
             and "Loader=_PlainLoader" not in line]
    assert found == []

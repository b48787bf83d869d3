"""Point schemes as YAML files: the shipped files equal the old Python tables, and user files are validated."""

from __future__ import annotations

import pytest

from facemark.schemes import (
    SCHEMES,
    PointScheme,
    SchemeError,
    get_scheme,
    load_scheme,
    scheme_from_dict,
    scheme_to_dict,
)

# The Python tables facemark/schemes.py held before the schemes became YAML files (kept to pin the files).

def _perm_from_pairs(num_points: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(num_points))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _scheme_68() -> PointScheme:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    groups = {
        "jaw": tuple(range(0, 17)),
        "right_brow": tuple(range(17, 22)),
        "left_brow": tuple(range(22, 27)),
        "nose_bridge": tuple(range(27, 31)),
        "nostrils": tuple(range(31, 36)),
        "right_eye": tuple(range(36, 42)),
        "left_eye": tuple(range(42, 48)),
        "outer_lips": tuple(range(48, 60)),
        "inner_lips": tuple(range(60, 68)),
    }
    return PointScheme(
        "68", 68, _perm_from_pairs(68, pairs), (36, 45), groups["right_eye"], groups["left_eye"], groups,
        nose_tip=30, mouth_corners=(48, 54),
    )


def _scheme_98() -> PointScheme:
    pairs = [(i, 32 - i) for i in range(16)]  # jaw
    pairs += [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]
    pairs += [(55, 59), (56, 58)]
    pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97)]
    groups = {
        "jaw": tuple(range(0, 33)),
        "right_brow": tuple(range(33, 42)),
        "left_brow": tuple(range(42, 51)),
        "nose": tuple(range(51, 60)),
        "right_eye": tuple(range(60, 68)),
        "left_eye": tuple(range(68, 76)),
        "outer_lips": tuple(range(76, 88)),
        "inner_lips": tuple(range(88, 96)),
        "pupils": (96, 97),
    }
    return PointScheme(
        "98", 98, _perm_from_pairs(98, pairs), (60, 72), groups["right_eye"], groups["left_eye"], groups,
        nose_tip=54, mouth_corners=(76, 82),
    )


def _scheme_29() -> PointScheme:
    # COFW: pairs as in the COFW release (1-based: 1-2, 3-4, 5-7, 6-8, 9-10, 11-12, 13-15, 14-16,
    # 17-18, 19-20, 23-24); the normaliser is points 9 and 10 (1-based), as HRNet evaluates COFW.
    pairs = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)]
    return PointScheme(
        "29", 29, _perm_from_pairs(29, pairs), (8, 9), (8, 10, 12, 13, 16), (9, 11, 14, 15, 17),
        {"all": tuple(range(29))}, nose_tip=20, mouth_corners=(22, 23),
    )


def _scheme_5() -> PointScheme:
    # The order of the CUHK lists (facemark.data.formats.cuhk): image-left eye centre, image-right eye
    # centre, nose tip, image-left mouth corner, image-right mouth corner. Image left is the subject's
    # right, so point 0 is the "right" eye here as in 300-W, and NME is normalised by the eye-centre
    # distance (points 0 and 1), not by outer eye corners, which this scheme does not have.
    return PointScheme(
        "5", 5, _perm_from_pairs(5, [(0, 1), (3, 4)]), (0, 1), (0,), (1,),
        {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)}, nose_tip=2, mouth_corners=(3, 4),
    )


OLD_SCHEMES: dict[int, PointScheme] = {s.num_points: s for s in (_scheme_68(), _scheme_98(), _scheme_29(), _scheme_5())}


def test_shipped_files_equal_the_old_tables():
    assert list(SCHEMES) == list(OLD_SCHEMES)
    for k, old in OLD_SCHEMES.items():
        new = get_scheme(k)
        assert new == old, k
        assert len(new.point_names) == k and len(set(new.point_names)) == k


def test_round_trip(tmp_path):
    import json

    for k, scheme in SCHEMES.items():
        loaded = load_scheme_from(tmp_path, scheme_to_dict(scheme))
        assert loaded == scheme and loaded.closed == scheme.closed and loaded.pose_points == scheme.pose_points
        # as an exported model's metadata carries it: through JSON
        again = scheme_from_dict(json.loads(json.dumps(scheme_to_dict(scheme))))
        assert again.pose_points == scheme.pose_points and len(again.pose_points) == k
    assert get_scheme(68).closed == ("right_eye", "left_eye", "outer_lips", "inner_lips")


def load_scheme_from(tmp_path, data, name="my.yaml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_scheme(path)


def _tri():
    return {"name": "tri", "points": ["a", "b", "c"], "flip": [1, 0, 2],
            "normalise": {"outer_eye_corners": [0, 1]}, "lines": {"all": [0, 2, 1]}}


def test_minimal_user_scheme(tmp_path):
    s = load_scheme_from(tmp_path, _tri())
    assert (s.name, s.num_points, s.flip_perm, s.outer_eye_corners) == ("tri", 3, (1, 0, 2), (0, 1))
    assert s.right_eye == (0,) and s.left_eye == (1,) and s.groups == {"all": (0, 2, 1)}
    assert s.point_names == ("a", "b", "c") and s.nose_tip is None and s.pose_points == ()
    s = load_scheme_from(tmp_path, _tri() | {"pose": [36, [42, 45], None]})  # a point, a mean of two, none
    assert s.pose_points == ((36,), (42, 45), None)


@pytest.mark.parametrize("edit, key, words", [
    (lambda d: d.update(flip=[1, 2, 0]), "flip", "involution"),
    (lambda d: d.update(flip=[1, 0]), "flip", "expected 3"),
    (lambda d: d.update(flip=[1, 0, 5]), "flip", "out of range"),
    (lambda d: d.update(flip=[1, 0, "x"]), "flip", "not a point index"),
    (lambda d: d.update(points=["a", "b", "a"]), "points", "not unique"),
    (lambda d: d.update(points=[]), "points", "non-empty"),
    (lambda d: d.update(normalise={"outer_eye_corners": [0, 3]}), "normalise.outer_eye_corners", "out of range"),
    (lambda d: d.update(normalise={"outer_eye_corners": [1, 1]}), "normalise.outer_eye_corners", "differ"),
    (lambda d: d.update(normalise={"outer_eye_corners": [0]}), "normalise.outer_eye_corners", "expected 2"),
    (lambda d: d.update(normalise={"outer_eye_corners": [0, 1], "right_eye": [9]}), "normalise.right_eye", "out of range"),
    (lambda d: d.update(normalise={}), "normalise.outer_eye_corners", "missing"),
    (lambda d: d.update(lines={"all": [0, 3]}), "lines.all", "out of range"),
    (lambda d: d.update(nose_tip=7), "nose_tip", "out of range"),
    (lambda d: d.update(mouth_corners=[0]), "mouth_corners", "expected 2"),
    (lambda d: d.pop("flip"), "flip", "missing"),
    (lambda d: d.update(colour="red"), "colour", "unknown key"),
    (lambda d: d.update(closed_lines=["eyes"]), "closed_lines", "'eyes' is not one of the lines (all)"),
    (lambda d: d.update(closed_lines="all"), "closed_lines", "expected a list"),
    (lambda d: d.update(pose=[36, 45]), "pose", "expected a list of 3 entries"),
    (lambda d: d.update(pose={0: 36}), "pose", "expected a list of 3 entries"),
    (lambda d: d.update(pose=[36, 68, None]), "pose[1]", "index 68 out of range 0..67"),
    (lambda d: d.update(pose=[[], 45, None]), "pose[0]", "at least 1"),
    (lambda d: d.update(pose=[36, "nose", None]), "pose[1]", "not a point index"),
])
def test_invalid_files_fail_in_one_line(tmp_path, edit, key, words):
    data = _tri()
    edit(data)
    with pytest.raises(SchemeError) as e:
        load_scheme_from(tmp_path, data)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "my.yaml") in msg and f": {key}:" in msg and words in msg, msg


def test_unreadable_and_not_yaml(tmp_path):
    with pytest.raises(SchemeError, match="cannot read"):
        load_scheme(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SchemeError, match="not valid YAML"):
        load_scheme(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SchemeError, match="expected a mapping"):
        load_scheme(tmp_path / "list.yaml")


def _my68(tmp_path):
    import yaml

    data = scheme_to_dict(get_scheme(68))
    data["name"] = "my68"
    data["points"] = [f"pt{i}" for i in range(68)]
    path = tmp_path / "my68.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_spec_carries_a_custom_scheme():
    from facemark.geometry import CropRule
    from facemark.spec import ModelSpec

    custom = scheme_to_dict(get_scheme(5)) | {"name": "five-mine"}
    spec = ModelSpec("m", {"num_points": 5, "input_size": 64}, 64, CropRule(), custom)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again.scheme == custom and again.point_scheme.name == "five-mine"
    assert again.point_scheme.flip_perm == get_scheme(5).flip_perm
    old = ModelSpec.from_dict({**spec.to_dict(), "scheme": "5"})
    assert old.point_scheme is get_scheme(5)


def test_custom_scheme_prepare_train_eval_predict(synthetic_dataset, tmp_path, capsys):
    import json

    import yaml

    from facemark.api import Landmarker
    from facemark.checkpoint import load_checkpoint
    from facemark.cli import main
    from facemark.data.store import Store

    scheme_file = _my68(tmp_path)
    data = tmp_path / "data"
    assert main(["data", "prepare", str(synthetic_dataset), "--out", str(data), "--size", "64",
                 "--scheme", str(scheme_file)]) == 0
    assert Store.open(data / "train").scheme.name == "my68"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(data), "out": str(tmp_path / "run"), "model": "seed_senet", "input_size": 48, "batch_size": 8,
        "steps": 2, "val_every": 2, "ckpt_every": 2, "num_threads": 1}))
    assert main(["train", "--config", str(config)]) == 0  # the scheme comes from the prepared data
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["scheme"]["name"] == "my68" and state["scheme"]["points"][0] == "pt0"
    landmarker = Landmarker(tmp_path / "run" / "best.pt")
    assert landmarker.scheme.name == "my68" and landmarker.scheme.flip_perm == get_scheme(68).flip_perm
    assert main(["eval", "--model", str(tmp_path / "run" / "best.pt"), "--data", str(data / "val"),
                 "--out", str(tmp_path / "eval"), "--scheme", str(scheme_file)]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert main(["predict", "--model", str(tmp_path / "run" / "best.pt"), "--sample", "--out", str(tmp_path / "pred"),
                 "--scheme", str(scheme_file)]) == 0
    # --scheme on train: checked against the data's point count
    five = tmp_path / "five.yaml"
    five.write_text(yaml.safe_dump(scheme_to_dict(get_scheme(5))))
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--scheme", str(five), "--set", f"out={tmp_path / 'run2'}"]) != 0
    assert "scheme '5' has 5 points, the data/model has 68" in capsys.readouterr().err


def test_a_scheme_file_with_another_point_count_is_named(tmp_path, tiny_checkpoint):
    """`predict --scheme wflw98.yaml` with a 68-point model said "scheme '98' has 98 points ...", naming no file."""
    import yaml

    from facemark.api import Landmarker
    from facemark.schemes import resolve_scheme

    path = tmp_path / "my98.yaml"
    path.write_text(yaml.safe_dump(scheme_to_dict(get_scheme(98))))
    for call in (lambda: Landmarker(tiny_checkpoint, scheme=load_scheme(path)), lambda: resolve_scheme(path, 68)):
        with pytest.raises(SchemeError) as err:
            call()
        assert str(err.value) == f"{path}: scheme '98' has 98 points, the data/model has 68"


def test_only_a_small_regular_file_is_read_as_a_scheme(tmp_path):
    """`--scheme /dev/zero` read 4.8 GB before a MemoryError and a FIFO blocked: a scheme file is a
    regular file of at most 1 MB (/dev/null stands in for the devices here: it ends at once)."""
    with pytest.raises(SchemeError, match=r"^/dev/null: cannot read: not a regular file$"):
        load_scheme("/dev/null")
    big = tmp_path / "big.yaml"
    from facemark.schemes import SCHEME_DIR

    big.write_text("#" * (2 << 20) + "\n" + (SCHEME_DIR / "ibug68.yaml").read_text())  # valid, but 2 MB
    with pytest.raises(SchemeError, match=r"big.yaml: \d+ bytes is too large for a scheme file \(at most 1048576\)"):
        load_scheme(big)

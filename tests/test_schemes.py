import numpy as np
import pytest

from facemark.schemes import SCHEMES, get_scheme


@pytest.mark.parametrize("num_points", sorted(SCHEMES))
def test_flip_twice_is_identity(num_points):
    scheme = get_scheme(num_points)
    points = np.random.default_rng(0).uniform(0, 100, (num_points, 2))
    assert sorted(scheme.flip_perm) == list(range(num_points))
    assert np.allclose(scheme.flip(scheme.flip(points, 120), 120), points, atol=1e-4)
    assert np.allclose(scheme.flip_normalised(scheme.flip_normalised(points / 100)), points / 100, atol=1e-6)


def test_68_groups_and_mirror_of_mirrored_face():
    scheme = get_scheme(68)
    assert scheme.groups["jaw"] == tuple(range(17)) and scheme.outer_eye_corners == (36, 45)
    assert sum(len(g) for g in scheme.groups.values()) == 68
    # a symmetric face: mirror every point of the right half onto the left half
    rng = np.random.default_rng(2)
    width = 201
    points = rng.uniform(0, 100, (68, 2))
    for i, j in enumerate(scheme.flip_perm):
        if i == j:
            points[i, 0] = (width - 1) / 2
        elif i < j:
            points[j] = ((width - 1) - points[i, 0], points[i, 1])
    assert np.allclose(scheme.flip(points, width), points, atol=1e-4)


def test_98_corners_and_unknown_scheme():
    assert get_scheme(98).outer_eye_corners == (60, 72)
    assert get_scheme(98).flip_perm[96] == 97
    with pytest.raises(ValueError, match="no point scheme with 12 points"):
        get_scheme(12)


def test_wflw_98_to_68_keeps_the_corresponding_points():
    from facemark.schemes import WFLW98_TO_68, get_scheme, to_68

    assert len(WFLW98_TO_68) == 68 and len(set(WFLW98_TO_68)) == 68 and max(WFLW98_TO_68) < 96
    points = np.arange(98 * 2, dtype=np.float32).reshape(98, 2)
    converted = to_68(points)
    assert converted.shape == (68, 2)
    # jaw ends, outer eye corners (WFLW 60, 72 -> iBUG 36, 45), nose tip (54 -> 30), mouth corners (76, 82 -> 48, 54)
    for ibug, wflw in ((0, 0), (16, 32), (36, 60), (45, 72), (30, 54), (48, 76), (54, 82)):
        assert np.array_equal(converted[ibug], points[wflw]), (ibug, wflw)
    # mirror-consistent: flipping then converting equals converting then flipping
    width = 500.0
    assert np.allclose(to_68(get_scheme(98).flip(points, width)), get_scheme(68).flip(converted, width))
    with pytest.raises(ValueError, match="29-point"):
        to_68(np.zeros((29, 2)))


def test_a_scheme_file_with_aliases_is_refused_in_one_line(tmp_path):
    from facemark.schemes import SchemeError, load_scheme

    path = tmp_path / "s.yaml"
    path.write_text("name: x\npoints: &p [a, b]\nflip: *p\n")
    with pytest.raises(SchemeError, match=r"s.yaml: YAML anchors and aliases \(& and \*\) are not accepted \(line 2\)$"):
        load_scheme(path)

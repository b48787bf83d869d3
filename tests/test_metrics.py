"""Known-answer tests for facemark.metrics and smoke tests for facemark.plots."""

import math
import os

import cv2
import numpy as np
import pytest

from facemark import metrics, plots
from facemark.schemes import get_scheme


def face68() -> np.ndarray:
    """A 68-point face with hand-set eyes and box.

    Outer eye corners 36 = (100, 200), 45 = (180, 200): inter-ocular 80. Right-eye points average
    to (115, 200), left-eye points to (165, 200): inter-pupil 50. Points 0 and 8 are the box
    corners (80, 150) and (240, 330): w = 160, h = 180.
    """
    rng = np.random.default_rng(1)
    pts = rng.uniform((90, 160), (230, 320), size=(68, 2))
    pts[36:42] = [(100, 200), (110, 195), (120, 195), (130, 200), (120, 205), (110, 205)]
    pts[42:48] = [(150, 200), (160, 195), (170, 195), (180, 200), (170, 205), (160, 205)]
    pts[0], pts[8] = (80, 150), (240, 330)
    return pts


EXPECTED_NORM = {
    "inter_ocular": 80.0,
    "inter_pupil": 50.0,
    "box_diagonal": math.hypot(160, 180),
    "box_area": math.sqrt(160 * 180),
}

# errors off the CED grid; by hand: AUC@10 = mean(.85, .75, .45, .05, 0) = .42,
# AUC@8 = mean(.8125, .6875, .3125, 0, 0) = .3625, FR@8 = 2/5, FR@10 = 1/5
HAND = np.array([0.015, 0.025, 0.055, 0.095, 0.2])


def test_descriptions_cover_every_normalisation():
    assert list(metrics.NORMALISATIONS) == ["inter_ocular", "inter_pupil", "box_diagonal", "box_area"]
    assert all(isinstance(text, str) and text for text in metrics.NORMALISATIONS.values())
    assert "36, 45" in metrics.describe("inter_ocular", get_scheme(68), box="ground-truth landmark box")
    assert "36-41 and 42-47" in metrics.describe("inter_pupil", get_scheme(68))


@pytest.mark.parametrize("kind", metrics.NORMALISATIONS)
def test_perfect_prediction_is_zero(kind):
    gt = face68()[None]
    np.testing.assert_array_equal(metrics.nme(gt, gt, kind), [0.0])


@pytest.mark.parametrize("kind", metrics.NORMALISATIONS)
def test_shift_by_d_gives_d_over_normaliser(kind):
    gt = np.stack([face68(), face68() * 2])  # second face twice as big: normaliser doubles
    pred = gt + (3.0, 4.0)  # every point 5 px off
    np.testing.assert_allclose(metrics.normaliser(gt, kind), [EXPECTED_NORM[kind], 2 * EXPECTED_NORM[kind]])
    np.testing.assert_allclose(metrics.nme(pred, gt, kind), [5 / EXPECTED_NORM[kind], 2.5 / EXPECTED_NORM[kind]],
                               rtol=1e-12)
    assert metrics.nme(pred, gt)[0] == 5 / 80  # exact for the default inter-ocular


def test_single_face_and_point_errors():
    gt = face68()
    assert metrics.point_errors(gt + (3, 4), gt).shape == (1, 68)
    np.testing.assert_allclose(metrics.point_errors(gt + (3, 4), gt), 5.0)
    assert metrics.nme(gt + (3, 4), gt).shape == (1,)


def test_wflw_98_uses_points_60_and_72():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0, 200, size=(2, 98, 2))
    gt[:, 60], gt[:, 72] = (50, 100), (50 + 70, 100)
    assert get_scheme(98).outer_eye_corners == (60, 72)
    np.testing.assert_allclose(metrics.normaliser(gt, "inter_ocular"), [70, 70])
    np.testing.assert_allclose(metrics.nme(gt + (0, 7), gt), [0.1, 0.1])


def test_cofw_29_normaliser_and_pupils():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 200, size=(1, 29, 2))
    gt[0, 8], gt[0, 9] = (40, 90), (40, 90 + 64)
    np.testing.assert_allclose(metrics.normaliser(gt, "inter_ocular"), [64])
    s = get_scheme(29)
    ipd = np.linalg.norm(gt[0, list(s.left_eye)].mean(0) - gt[0, list(s.right_eye)].mean(0))
    np.testing.assert_allclose(metrics.normaliser(gt, "inter_pupil"), [ipd])


def test_box_kinds_need_no_scheme_and_eye_kinds_do():
    gt = np.array([[[0, 0], [30, 0], [30, 40], [10, 20]]], dtype=float)
    np.testing.assert_allclose(metrics.normaliser(gt, "box_diagonal"), [50])
    np.testing.assert_allclose(metrics.normaliser(gt, "box_area"), [math.sqrt(1200)])
    with pytest.raises(ValueError):
        metrics.normaliser(gt, "inter_ocular")
    with pytest.raises(ValueError):
        metrics.normaliser(face68()[None], "inter_ocular", get_scheme(98))
    with pytest.raises(ValueError):
        metrics.normaliser(gt, "chin_to_brow")


def test_zero_normaliser_raises():
    gt = face68()[None].copy()
    gt[0, 45] = gt[0, 36]
    with pytest.raises(ValueError, match="zero"):
        metrics.nme(gt, gt)


def test_visibility_mask_averages_visible_points_only():
    gt = face68()[None]
    pred = gt + (3.0, 4.0)
    pred[0, :10] += 1000.0  # wild errors on occluded points
    visible = np.ones((1, 68), bool)
    visible[0, :10] = False
    np.testing.assert_allclose(metrics.nme(pred, gt, visible=visible), [5 / 80])
    assert metrics.nme(pred, gt)[0] > 1
    with pytest.raises(ValueError, match="visible"):
        metrics.nme(pred, gt, visible=np.zeros((1, 68), bool))


def test_ced_values():
    thresholds, fraction = metrics.ced(HAND, max_error=0.10, steps=10)
    np.testing.assert_allclose(thresholds, np.linspace(0, 0.1, 11))
    np.testing.assert_allclose(fraction, [0, 0, 0.2, 0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6, 0.8])


def test_auc_known_answers():
    assert metrics.auc(HAND, 0.10) == pytest.approx(0.42)
    assert metrics.auc(HAND, 0.08) == pytest.approx(0.3625)
    assert metrics.auc(np.zeros(7), 0.08) == 1.0
    assert metrics.auc(np.full(7, 0.5), 0.08) == 0.0
    uniform = (np.arange(1000) + 0.5) / 1000 * 0.08  # uniform on [0, 0.08]: CED is a ramp
    assert metrics.auc(uniform, 0.08) == pytest.approx(0.5)
    # the exact AUC is the integral of the plotted CED
    t, f = metrics.ced(HAND, 0.10, steps=100_000)
    assert np.trapezoid(f, t) / 0.10 == pytest.approx(0.42, abs=1e-4)


def test_failure_rate():
    assert metrics.failure_rate(HAND, 0.08) == pytest.approx(0.4)
    assert metrics.failure_rate(HAND, 0.10) == pytest.approx(0.2)
    assert metrics.failure_rate([0.1], 0.10) == 0.0  # strictly greater fails


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    errors = np.random.default_rng(4).gamma(2.0, 0.02, size=300)
    lo, hi = metrics.bootstrap_ci(errors, seed=0)
    assert lo < errors.mean() < hi
    assert (lo, hi) == metrics.bootstrap_ci(errors, seed=0)
    assert (lo, hi) != metrics.bootstrap_ci(errors, seed=1)
    assert metrics.bootstrap_ci(np.full(5, 0.03)) == pytest.approx((0.03, 0.03))


def test_summarise_keys_and_values():
    s = metrics.summarise(HAND)
    assert set(s) == {"mean", "median", "p90", "p95", "p99", "fr@8", "fr@10", "auc@8", "auc@10", "ci95", "count"}
    assert s["mean"] == pytest.approx(0.078)
    assert s["median"] == pytest.approx(0.055)
    assert s["fr@8"] == pytest.approx(0.4) and s["fr@10"] == pytest.approx(0.2)
    assert s["auc@8"] == pytest.approx(0.3625) and s["auc@10"] == pytest.approx(0.42)
    assert s["count"] == 5 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    with pytest.raises(ValueError):
        metrics.summarise([0.1, float("nan")])


def test_plots_write_png_atomically(tmp_path):
    rng = np.random.default_rng(5)
    curves = metrics.ced_curves({"a": rng.gamma(2, 0.02, 50), "b": HAND})
    assert list(curves)[1] == "b: NME 7.80%, AUC@10 0.420, FR@10 20.0% (n=5)"  # the legend carries the figures
    ced_path = plots.plot_ced(curves, tmp_path / "ced.png", xlabel=metrics.describe("inter_ocular", get_scheme(68)))
    loss_path = plots.plot_loss_curve(np.arange(20), np.exp(-np.arange(20) / 5), tmp_path / "loss.png",
                                      val_steps=[5, 10, 15], val_values=[0.08, 0.06, 0.05])
    grid_path = plots.write_image(tmp_path / "sub" / "grid.jpg", np.zeros((8, 8, 3), np.uint8))
    for path in (ced_path, loss_path, grid_path):
        assert cv2.imread(str(path)) is not None
    assert sorted(os.listdir(tmp_path)) == ["ced.png", "loss.png", "sub"]
    assert os.listdir(tmp_path / "sub") == ["grid.jpg"]

    from facemark.files import atomic_path

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "sub" / "grid.jpg") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert os.listdir(tmp_path / "sub") == ["grid.jpg"]  # old file kept, temp file removed
    assert cv2.imread(str(grid_path)) is not None


def test_drawings():
    image = np.zeros((64, 48, 3), np.uint8)
    pts = np.array([[10.0, 10.0], [30.5, 40.25], [np.nan, 5]])
    drawn = plots.draw_points(image, pts, (0, 255, 0), radius=2, indices=True)
    assert image.sum() == 0 and drawn.shape == image.shape and drawn[10, 10, 1] > 0
    boxed = plots.draw_box(image, (5, 5, 40, 50))
    assert boxed[5, 20].any() and not boxed[20, 20].any()
    both = plots.draw_comparison(image, pts[:2] + 5, pts[:2])
    assert both[10, 10, 1] > 0 and both[15, 15, 2] > 0
    grid = plots.make_grid([image, drawn, boxed], cols=2)
    assert grid.shape == (128, 96, 3)
    np.testing.assert_array_equal(grid[:64, 48:], drawn)
    with pytest.raises(ValueError):
        plots.make_grid([image, np.zeros((10, 10, 3), np.uint8)], cols=2)


def _contrast(a, b) -> float:
    """The WCAG contrast ratio of two sRGB colours (0..255)."""
    def luminance(c):
        c = np.asarray(c, float) / 255
        c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[..., 2] + 0.7152 * c[..., 1] + 0.0722 * c[..., 0]  # BGR
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("wall", [255, 180, 0])
def test_labels_read_on_light_and_dark_photos(wall):
    """A label (worst.png's face ids) sits on a dark box: white text on it stands out from a white wall as
    from a dark coat (contrast ratio >= 4.5, WCAG AA)."""
    image = np.full((40, 200, 3), wall, np.uint8)
    out = plots.draw_label(image, "afw/2060241469_1", (4, 20), 0.38)
    assert image.min() == wall  # the input is untouched
    changed = np.abs(out.astype(int) - image).sum(-1) > 0
    rows, cols = np.nonzero(changed)
    box = out[rows.min():rows.max() + 1, cols.min():cols.max() + 1].reshape(-1, 3)
    text = box[box.sum(-1).argmax()]
    background = np.median(box, axis=0)
    assert _contrast(text, background) >= 4.5, (text, background)
    assert _contrast(plots.LABEL_BACKGROUND, (255, 255, 255)) >= 7


def test_legend_keys_its_marks_in_a_corner_or_below():
    image = np.full((300, 400, 3), 255, np.uint8)
    entries = [("dot", (0, 255, 0), "landmark"), ("ring", plots.LOW_COLOR, "unsure"),
               ("line", (255, 255, 0), "lines"), ("box", (255, 0, 0), "box")]
    out = plots.draw_legend(image, entries)
    rows, cols = np.nonzero(np.abs(out.astype(int) - image).sum(-1) > 0)
    assert out.shape == image.shape and rows.min() > 150 and cols.max() < 200  # the lower left corner only
    top = plots.draw_legend(image, entries[:1], corner="top-right")
    rows, cols = np.nonzero(np.abs(top.astype(int) - image).sum(-1) > 0)
    assert rows.max() < 50 and cols.min() > 300
    below = plots.draw_legend(image, entries, below=True)  # a gallery: a strip under it, no tile covered
    assert below.shape[0] > image.shape[0] and np.array_equal(below[:300], image)
    assert np.array_equal(plots.draw_legend(image, []), image)
    assert np.array_equal(plots.draw_legend(image[:60, :100], entries), image[:60, :100])  # too small: no key
    with pytest.raises(ValueError, match="legend mark"):
        plots.draw_legend(image, [("star", (0, 0, 0), "?")])


def test_nmf_known_answers():
    gt = np.stack([face68() + (2.0 * t, -1.0 * t) for t in range(5)])  # (5, 68, 2): the face moves 2 px right, 1 up
    assert metrics.nmf(gt, gt) == 0.0
    assert metrics.nmf(gt + (3.0, -4.0), gt) == pytest.approx(0.0)  # a fixed bias moves with the face: no flicker
    still = np.stack([face68()] * 5)
    assert metrics.nmf(still, gt) == pytest.approx(math.hypot(2, 1) / 80)  # frozen points miss the motion
    jitter = gt.copy()
    jitter[1::2, :, 0] += 4.0  # every other frame 4 px right, then back: each change is 4 px
    assert metrics.nmf(jitter, gt) == pytest.approx(4.0 / 80)  # inter-ocular distance 80
    jitter[1::2, :34, 0] -= 4.0  # only half the points jitter: root mean square over points
    assert metrics.nmf(jitter, gt) == pytest.approx(math.sqrt(0.5) * 4.0 / 80)
    with pytest.raises(ValueError, match="T >= 2"):
        metrics.nmf(gt[:1], gt[:1])


def test_draw_lines_joins_the_scheme_lines_and_closes_only_closed_ones():
    """A square of four points: an open line draws three sides, a closed one all four; NaN ends are skipped."""
    square = np.array([[10, 10], [50, 10], [50, 50], [10, 50]], dtype=np.float64)
    blank = np.zeros((60, 60, 3), np.uint8)
    open_ = plots.draw_lines(blank, square, {"s": (0, 1, 2, 3)})
    closed = plots.draw_lines(blank, square, {"s": (0, 1, 2, 3)}, closed=("s",))
    left_side = (slice(20, 40), 10)  # the side from point 3 back to point 0
    assert open_[20:40, 30].sum() == 0 and open_[10, 20:40].sum() > 0  # not through the middle; top side drawn
    assert open_[left_side].sum() == 0 and closed[left_side].sum() > 0
    missing = square.copy()
    missing[1] = np.nan
    gappy = plots.draw_lines(blank, missing, {"s": (0, 1, 2, 3)})
    assert gappy[10, 20:40].sum() == 0 and gappy[50, 20:40].sum() > 0  # segments to the missing point left out
    assert blank.sum() == 0  # the input is not drawn on

"""Figures (CED, loss curves) and landmark drawings on images.

Figures use matplotlib's Agg canvas directly (no pyplot, so no global backend or figure state)
and, like :func:`write_image`, are written atomically: a temporary file in the target directory, then ``os.replace``, so a
reader never sees a half-written PNG. NME axes are shown in percent. This module draws what it
is given: the CEDs and their legends come from :func:`facemark.metrics.ced_curves`.

Drawing functions take BGR ``uint8`` images (OpenCV order), never modify their input and
return a new image. Points are pixel-centre ``(x, y)`` coordinates (see :mod:`facemark.geometry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from facemark.extras import require
from facemark.files import atomic_path, write_atomic

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT


# --------------------------------------------------------------------------- figures


def _new_figure(size: tuple[float, float] = (7.0, 5.0)):
    """A matplotlib figure on an Agg canvas (the plots extra; :class:`~facemark.extras.MissingExtra` without it)."""
    backend = require("matplotlib.backends.backend_agg", "drawing plots")
    figure = require("matplotlib.figure", "drawing plots")
    fig = figure.Figure(figsize=size, dpi=110)
    backend.FigureCanvasAgg(fig)
    return fig


def _save_atomic(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image atomically; the format follows the extension (``.png``, ``.jpg``, ...)."""
    suffix = Path(path).suffix or ".png"
    ok, data = cv2.imencode(suffix, np.asarray(image))
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix}")
    return write_atomic(path, data.tobytes())


def plot_ced(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    max_error: float = 0.10,
    title: str = "Cumulative error distribution",
    xlabel: str = "NME (%)",
) -> Path:
    """Plot cumulative error distributions to a PNG at ``path``: each ``label -> (errors, fraction of
    faces with error <= each)``, both fractions (:func:`facemark.metrics.ced_curves` computes them and
    their labels), on a 0..``max_error`` axis shown in percent."""
    PercentFormatter = require("matplotlib.ticker", "drawing plots").PercentFormatter

    fig = _new_figure()
    ax = fig.add_subplot()
    for label, (thresholds, fraction) in curves.items():
        ax.step(np.asarray(thresholds) * 100, np.asarray(fraction) * 100, where="post", linewidth=1.8, label=label)
    ax.set_xlim(0, max_error * 100)
    ax.set_ylim(0, 100)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("faces with NME ≤ x")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if curves:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)  # below: never over the curves
    return _save_atomic(fig, path)


def plot_loss_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    path: str | os.PathLike,
    val_steps: Sequence[float] | None = None,
    val_values: Sequence[float] | None = None,
    title: str = "Training",
    val_label: str = "validation NME",
) -> Path:
    """Training loss against step (log scale when all positive; a moving average over the faint raw
    curve when there are more than 50 points) and, optionally, validation NME (fractions, shown in
    percent, best value marked) on a twin axis; writes a PNG at ``path``."""
    PercentFormatter = require("matplotlib.ticker", "drawing plots").PercentFormatter

    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    fig = _new_figure((8.0, 4.5))
    ax = fig.add_subplot()
    if losses.size > 50:  # noisy per-step losses: faint raw curve under a moving average
        ax.plot(steps, losses, color="tab:blue", linewidth=0.6, alpha=0.25)
        window = max(2, losses.size // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue", linewidth=1.5, label=f"train loss ({window}-step mean)")
    else:
        ax.plot(steps, losses, color="tab:blue", linewidth=1.5, label="train loss")
    if losses.size and np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.grid(True, alpha=0.4)
    ax.set_title(title)
    handles = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    if val_steps is not None and val_values is not None and len(val_values):
        ax2 = ax.twinx()
        values = np.asarray(val_values, dtype=float) * 100
        ax2.plot(val_steps, values, color="tab:red", marker="o", markersize=3, linewidth=1.5, label=val_label)
        ax2.set_ylabel(f"{val_label} (%)", color="tab:red")
        ax2.yaxis.set_major_formatter(PercentFormatter(decimals=None))  # as many decimals as the ticks need
        ax2.margins(y=0.15)  # room for the "best" label under the lowest point
        best = int(np.argmin(values))
        ax2.annotate(
            f"best {values[best]:.2f}%", (val_steps[best], values[best]), textcoords="offset points",
            xytext=(0, -14), ha="center", fontsize=8, color="tab:red",
        )
        handles = [*handles, *ax2.get_lines()]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    return _save_atomic(fig, path)


# --------------------------------------------------------------------------- drawings


def _bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image.copy()


def _fixed(xy) -> tuple[int, int]:
    return int(round(xy[0] * _SCALE)), int(round(xy[1] * _SCALE))


LOW_SCORE = 0.5  # a point scored below this is drawn as a low-confidence point (red ring)
LOW_COLOR = (0, 0, 255)


def draw_points(
    image_bgr: np.ndarray,
    points: np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
    radius: float = 2,
    indices: bool = False,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """Anti-aliased filled circles at ``(K, 2)`` points (NaN points skipped), optionally labelled
    with their 0-based index. ``scores`` (``(K,)``, :attr:`facemark.Face.point_scores`): points
    scored below :data:`LOW_SCORE` are drawn as red rings instead."""
    out = _bgr(image_bgr)
    low = np.zeros(len(np.asarray(points).reshape(-1, 2)), bool) if scores is None else np.asarray(scores) < LOW_SCORE
    for i, p in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 2)):
        if not np.all(np.isfinite(p)):
            continue
        if low[i]:
            cv2.circle(out, _fixed(p), max(1, int(round(radius * 1.5 * _SCALE))), LOW_COLOR, 1, cv2.LINE_AA, _SHIFT)
            continue
        cv2.circle(out, _fixed(p), max(1, int(round(radius * _SCALE))), color, -1, cv2.LINE_AA, _SHIFT)
        if indices:
            org = (int(round(p[0] + radius + 1)), int(round(p[1] - radius - 1)))
            cv2.putText(out, str(i), org, cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, 1, cv2.LINE_AA)
    return out


def draw_lines(
    image_bgr: np.ndarray,
    points: np.ndarray,
    lines: dict[str, tuple[int, ...]],
    closed: tuple[str, ...] = (),
    color: tuple[int, int, int] = (255, 255, 0),
    thickness: int = 1,
) -> np.ndarray:
    """Anti-aliased polylines through the ``(K, 2)`` points of each scheme line (``PointScheme.groups``),
    the ``closed`` ones as closed outlines; segments with a missing (NaN) end are left out."""
    out = _bgr(image_bgr)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for name, idx in lines.items():
        idx = list(idx) + ([idx[0]] if name in closed and len(idx) > 2 else [])
        for a, b in zip(idx[:-1], idx[1:]):
            if np.all(np.isfinite(pts[a])) and np.all(np.isfinite(pts[b])):
                cv2.line(out, _fixed(pts[a]), _fixed(pts[b]), color, thickness, cv2.LINE_AA, _SHIFT)
    return out


def draw_box(
    image_bgr: np.ndarray, box, color: tuple[int, int, int] = (255, 0, 0), thickness: int = 1
) -> np.ndarray:
    """Rectangle for a box ``(x0, y0, x1, y1)``."""
    out = _bgr(image_bgr)
    x0, y0, x1, y1 = (float(v) for v in box)
    cv2.rectangle(out, _fixed((x0, y0)), _fixed((x1, y1)), color, thickness, cv2.LINE_AA, _SHIFT)
    return out


PRED_COLOR, GT_COLOR, ERROR_COLOR = (0, 0, 255), (0, 255, 0), (0, 255, 255)  # draw_comparison's (BGR)
#: the key to :func:`draw_comparison`'s marks in its default colours (:func:`draw_legend`)
COMPARISON_LEGEND = (("dot", PRED_COLOR, "prediction"), ("dot", GT_COLOR, "ground truth"),
                     ("line", ERROR_COLOR, "error (ground truth to prediction)"))


def draw_comparison(
    image_bgr: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    pred_color: tuple[int, int, int] = PRED_COLOR,
    gt_color: tuple[int, int, int] = GT_COLOR,
    line_color: tuple[int, int, int] = ERROR_COLOR,
    radius: float = 2,
) -> np.ndarray:
    """Prediction (red) and ground truth (green) with a yellow line from each gt point to its
    prediction (:data:`COMPARISON_LEGEND` says so on the picture)."""
    out = _bgr(image_bgr)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    for p, g in zip(pred, gt):
        if np.all(np.isfinite(p)) and np.all(np.isfinite(g)):
            cv2.line(out, _fixed(g), _fixed(p), line_color, 1, cv2.LINE_AA, _SHIFT)
    out = draw_points(out, gt, gt_color, radius)
    return draw_points(out, pred, pred_color, radius)


_FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_BACKGROUND = (0, 0, 0)  # the dark box under every label and legend: readable on light and dark photos
LABEL_OPACITY = 0.7  # of that box: white text on it has a contrast ratio of 6 or more over any photo


def text_scale(image_bgr: np.ndarray) -> float:
    """A font scale for labels that reads alike on small and large images (0.35 up to 1000 px)."""
    return max(0.35, max(np.asarray(image_bgr).shape[:2]) / 2800)


def _darken(out: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """Blend the box ``[x0, x1) x [y0, y1)`` of ``out`` (clipped to it) towards :data:`LABEL_BACKGROUND`, in place."""
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(out.shape[1], x1), min(out.shape[0], y1)
    if x1 > x0 and y1 > y0:
        region = out[y0:y1, x0:x1].astype(np.float32)
        dark = np.asarray(LABEL_BACKGROUND, np.float32)
        out[y0:y1, x0:x1] = (region * (1 - LABEL_OPACITY) + dark * LABEL_OPACITY + 0.5).astype(out.dtype)


def draw_label(
    image_bgr: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4,
    color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """``text`` with its baseline starting at ``org`` (as ``cv2.putText``) on a dark box, so that it
    reads on a white wall as on a dark coat."""
    out = _bgr(image_bgr)
    thickness = max(1, round(scale * 1.2))
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(1, round(h / 4))
    x, y = int(org[0]), int(org[1])
    _darken(out, x - pad, y - h - pad, x + w + pad, y + base + pad)
    cv2.putText(out, text, (x, y), _FONT, scale, color, thickness, cv2.LINE_AA)
    return out


def draw_legend(
    image_bgr: np.ndarray,
    entries: Sequence[tuple[str, tuple[int, int, int], str]],
    scale: float | None = None,
    corner: str = "bottom-left",
    below: bool = False,
) -> np.ndarray:
    """A key to what is drawn: ``entries`` are ``(mark, colour, text)`` with mark ``"dot"`` (a filled
    point), ``"ring"`` (a low-score point, :func:`draw_points`), ``"line"`` or ``"box"``, one per row on
    a dark box in ``corner`` (``"bottom-left"``, ``"bottom-right"``, ``"top-left"``, ``"top-right"``);
    ``below``: in one row, on a strip added under the image (a gallery, whose tiles it must not cover).
    ``scale``: the font scale (default: :func:`text_scale`). An image too small to hold the key in a
    corner (it would be wider than the image or cover more than half its height) is left without one."""
    out = _bgr(image_bgr)
    if not entries:
        return out
    scale = text_scale(out) if scale is None else scale
    thickness = max(1, round(scale * 1.2))
    sizes = [cv2.getTextSize(text, _FONT, scale, thickness) for _, _, text in entries]
    text_h = max(h for (_, h), _ in sizes)
    base = max(b for _, b in sizes)
    pad = max(2, round(text_h / 2))
    row = text_h + base + pad  # one entry's height
    mark = row  # the square cell its mark is drawn in
    widths = [mark + pad + w for (w, _), _ in sizes]
    if below:
        strip = np.zeros((row + 2 * pad, out.shape[1], 3), out.dtype)
        strip[:] = LABEL_BACKGROUND
        out = np.vstack([out, strip])
        cells = [(pad + sum(widths[:i]) + 2 * pad * i, out.shape[0] - row - pad) for i in range(len(entries))]
    else:
        w_box, h_box = max(widths) + 2 * pad, len(entries) * row + pad
        if w_box + 2 * pad > out.shape[1] or h_box + 2 * pad > out.shape[0] / 2:
            return out
        x0 = pad if corner.endswith("left") else out.shape[1] - w_box - pad
        y0 = pad if corner.startswith("top") else out.shape[0] - h_box - pad
        _darken(out, x0, y0, x0 + w_box, y0 + h_box)
        cells = [(x0 + pad, y0 + pad // 2 + i * row) for i in range(len(entries))]
    for (kind, color, text), (x, y) in zip(entries, cells):
        cx, cy, r = x + mark / 2, y + row / 2, max(1.5, mark / 6)
        if kind == "dot":
            cv2.circle(out, _fixed((cx, cy)), int(round(r * _SCALE)), color, -1, cv2.LINE_AA, _SHIFT)
        elif kind == "ring":
            cv2.circle(out, _fixed((cx, cy)), int(round(r * 1.5 * _SCALE)), color, 1, cv2.LINE_AA, _SHIFT)
        elif kind == "line":
            cv2.line(out, _fixed((x + 1, cy)), _fixed((x + mark - 2, cy)), color, thickness, cv2.LINE_AA, _SHIFT)
        elif kind == "box":
            cv2.rectangle(out, _fixed((x + 2, y + 3)), _fixed((x + mark - 3, y + row - 4)), color, thickness,
                          cv2.LINE_AA, _SHIFT)
        else:
            raise ValueError(f"legend mark {kind!r}: one of dot, ring, line, box")
        cv2.putText(out, text, (int(x + mark + pad), int(y + pad // 2 + text_h)), _FONT, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out


def make_grid(images: Sequence[np.ndarray], cols: int, pad: int = 0, fill: int = 0) -> np.ndarray:
    """Tile same-size ``H x W x 3`` images row by row into ``cols`` columns (``pad`` pixels apart);
    empty cells are ``fill``."""
    if not images:
        raise ValueError("no images to tile")
    images = [_bgr(im) for im in images]
    h, w = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError(f"images differ in size: {sorted({im.shape for im in images})}")
    cols = max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), fill, dtype=images[0].dtype)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return grid

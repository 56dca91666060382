"""Figures of an evaluation report: images of chips and matplotlib plots as PNG bytes.

Image functions turn chips into uint8 RGB arrays (true colour, truth, probability, error
map); figure functions draw with matplotlib's Agg backend (imported only when a figure is
drawn) and return PNG bytes for :mod:`pvdetect.evaluation.report` to embed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "COLOURS",
    "GRID_DPI",
    "GRID_FONT_PT",
    "GridChip",
    "error_image",
    "fig_confusion",
    "fig_prediction_grid",
    "fig_pr_curve",
    "fig_probability_histogram",
    "fig_threshold_curves",
    "prediction_mosaic",
    "prob_image",
    "rgb_stretch",
    "truth_image",
]

#: colours of the error map (RGB 0-255)
COLOURS = {
    "tn": (20, 20, 20),
    "tp": (255, 255, 255),
    "fp": (228, 26, 28),
    "fn": (55, 126, 255),
    "ignore": (128, 128, 128),
}


@dataclass
class GridChip:
    """One chip drawn in a prediction grid.

    Attributes:
        key: chip key.
        site: site id.
        label: why it is shown, e.g. ``"best 1"``.
        score: the per-image score used to pick it (IoU).
        rgb: uint8 ``[H, W, 3]`` stretched true-colour image.
        truth: uint8 ``[H, W]`` mask, 0/1, 255 = ignored.
        prob: float32 ``[H, W]`` predicted probability.
        threshold: decision threshold for the prediction.
    """

    key: str
    site: str
    label: str
    score: float | None
    rgb: np.ndarray
    truth: np.ndarray
    prob: np.ndarray
    threshold: float


#: resolution of the prediction grid and the size of its labels (12 pt at 100 dpi: 17 px type)
GRID_DPI = 100
GRID_FONT_PT = 12
_TITLE_BAND = 30  # px above the first row for the column titles
_LABEL_BAND = 28  # px above each row for its label


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 90) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------- images


def rgb_stretch(
    raw: np.ndarray,
    valid: np.ndarray,
    p2: Sequence[float],
    p98: Sequence[float],
    bands: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """True-colour uint8 ``[H, W, 3]`` from raw ``[C, H, W]``, stretched between p2 and p98.

    The stretch uses the training-split band percentiles (never per-image min/max), so chips
    are comparable; invalid pixels are drawn grey.
    """
    out = np.empty((*raw.shape[1:], 3), dtype=np.uint8)
    for i, b in enumerate(bands):
        lo, hi = float(p2[b]), float(p98[b])
        scale = hi - lo if hi > lo else 1.0
        out[..., i] = np.clip((raw[b] - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    out[~valid.astype(bool)] = COLOURS["ignore"]
    return out


def error_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: TP white, FP red, FN blue, TN dark, ignored (255) grey."""
    pred = pred.astype(bool)
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = COLOURS["tn"]
    t1, t0 = truth == 1, truth == 0
    out[pred & t1] = COLOURS["tp"]
    out[pred & t0] = COLOURS["fp"]
    out[~pred & t1] = COLOURS["fn"]
    out[truth == 255] = COLOURS["ignore"]
    return out


def truth_image(truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: PV white, background dark, ignored grey."""
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = COLOURS["tn"]
    out[truth == 1] = COLOURS["tp"]
    out[truth == 255] = COLOURS["ignore"]
    return out


def prob_image(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` probability in the magma colour map; ignored pixels grey."""
    cmap = _plt().get_cmap("magma")
    out = (cmap(np.clip(prob, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)
    out[truth == 255] = COLOURS["ignore"]
    return out


# -------------------------------------------------------------------------------- figures


def fig_confusion(conf: dict[str, Any], title: str = "Confusion matrix") -> bytes:
    """2x2 confusion matrix with counts and shares of the true class (rows = truth)."""
    plt = _plt()
    m = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]], dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{int(m[i, j]):,}\n{share[i, j]:.1%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    ax.set_xticks([0, 1], ["background", "PV"])
    ax.set_yticks([0, 1], ["background", "PV"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def fig_probability_histogram(
    edges: Sequence[float],
    pos: Sequence[float],
    neg: Sequence[float],
    threshold: float,
    title: str = "Predicted probability",
) -> bytes:
    """Distributions of the predicted probability of true PV and true background pixels."""
    plt = _plt()
    edges_a = np.asarray(edges, dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for counts, name, colour in ((neg, "background", "#4d4d4d"), (pos, "PV", "#e6550d")):
        c = np.asarray(counts, dtype=float)
        total = c.sum()
        dens = c / total if total > 0 else c
        ax.stairs(
            dens,
            edges_a,
            label=f"{name} ({int(total):,} px)",
            color=colour,
            fill=False,
            linewidth=1.5,
        )
    ax.axvline(
        threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}"
    )
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted PV probability")
    ax.set_ylabel("share of pixels of the class")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_pr_curve(
    precision: Sequence[float],
    recall: Sequence[float],
    chosen: tuple[float, float] | None = None,
    best: tuple[float, float] | None = None,
    prevalence: float | None = None,
    title: str = "Precision-recall",
) -> bytes:
    """Precision against recall over the sweep; ``chosen``/``best`` are (recall, precision)."""
    plt = _plt()
    p, r = _finite_pairs(precision, recall)
    # thresholds with no true positive (no prediction at all near 1.0) carry no PR information
    keep = (p > 0) | (r > 0)
    p, r = p[keep], r[keep]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot(r, p, color="#3182bd", linewidth=1.5)
    if prevalence is not None and prevalence > 0:
        ax.axhline(prevalence, color="grey", linestyle=":", linewidth=1, label="random")
    if chosen is not None:
        ax.plot(*chosen, "o", color="k", label="used threshold")
    if best is not None:
        ax.plot(*best, "*", color="#e6550d", markersize=11, label="best F1 (on this split)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def fig_threshold_curves(
    thresholds: Sequence[float],
    f1: Sequence[float],
    iou: Sequence[float],
    chosen: float | None = None,
    best: float | None = None,
    title: str = "F1 and IoU against the threshold",
) -> bytes:
    """F1 and IoU of the PV class against the decision threshold."""
    plt = _plt()
    t = np.asarray(thresholds, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.plot(t, _nan(f1), label="F1", color="#3182bd")
    ax.plot(t, _nan(iou), label="IoU", color="#31a354")
    if chosen is not None:
        ax.axvline(chosen, color="k", linestyle="--", linewidth=1, label="used threshold")
    if best is not None:
        ax.axvline(best, color="#e6550d", linestyle=":", linewidth=1.3, label="best F1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("threshold")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def prediction_mosaic(chips: Sequence[GridChip], cell: int = 96, gap: int = 4) -> np.ndarray:
    """One uint8 RGB image: a row per chip of RGB | truth | probability | errors panels.

    Panels are enlarged by the smallest integer factor (nearest) that makes the largest chip
    at least ``cell`` pixels wide; smaller chips are centred on white. Chips over 256 px are
    thinned first.
    """
    side = max(max(c.truth.shape) for c in chips)
    step = max(1, math.ceil(side / 256))  # large chips are thinned to keep the report small
    if step > 1:
        chips = [
            GridChip(
                c.key,
                c.site,
                c.label,
                c.score,
                c.rgb[::step, ::step],
                c.truth[::step, ::step],
                c.prob[::step, ::step],
                c.threshold,
            )
            for c in chips
        ]
        side = max(max(c.truth.shape) for c in chips)
    k = max(1, math.ceil(cell / side))
    s = side * k
    n = len(chips)
    out = np.full((n * s + (n - 1) * gap, 4 * s + 3 * gap, 3), 255, dtype=np.uint8)
    for r, chip in enumerate(chips):
        pred = chip.prob >= chip.threshold
        panels = (
            chip.rgb,
            truth_image(chip.truth),
            prob_image(chip.prob, chip.truth),
            error_image(pred, chip.truth),
        )
        for c, img in enumerate(panels):
            big = img.repeat(k, 0).repeat(k, 1)
            h, w = big.shape[:2]
            y0 = r * (s + gap) + (s - h) // 2
            x0 = c * (s + gap) + (s - w) // 2
            out[y0 : y0 + h, x0 : x0 + w] = big
    return out


def _grid_canvas(mosaic: np.ndarray, n: int, gap: int) -> tuple[np.ndarray, int, int]:
    """The mosaic with a band for the column titles on top and a label band above each row.

    Returns the image, the height of a panel row and the y of the first row's label band.
    """
    h, w = mosaic.shape[:2]
    rs = (h - (n - 1) * gap) // n
    out = np.full((_TITLE_BAND + n * (_LABEL_BAND + rs), w, 3), 255, dtype=np.uint8)
    for r in range(n):
        y0 = _TITLE_BAND + r * (_LABEL_BAND + rs) + _LABEL_BAND
        out[y0 : y0 + rs] = mosaic[r * (rs + gap) : r * (rs + gap) + rs]
    return out, rs, _TITLE_BAND


def fig_prediction_grid(chips: Sequence[GridChip], title: str = "") -> bytes:
    """Rows of RGB | truth | probability | errors (TP white, FP red, FN blue, ignored grey).

    The figure is drawn one image pixel to one PNG pixel at :data:`GRID_DPI`, at most about
    1050 px wide (panels of 128 to 256 px), so the report shows it at its own size; each row
    is labelled (why it is shown, chip key, IoU) on one line above it, in
    :data:`GRID_FONT_PT` point type (capitals about 12 px high).
    """
    plt = _plt()
    if not chips:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0, 0.5, "no chips with PV or predictions", fontsize=GRID_FONT_PT)
        return _png(fig, dpi=GRID_DPI)
    gap = 4
    n = len(chips)
    canvas, rs, top = _grid_canvas(prediction_mosaic(chips, 128, gap), n, gap)
    h, w = canvas.shape[:2]
    s = (w - 3 * gap) // 4
    fig = plt.figure(figsize=(w / GRID_DPI, h / GRID_DPI), dpi=GRID_DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    columns = ("RGB (p2-p98)", "truth", "probability", "errors")
    for c, name in enumerate(columns):
        x = c * (s + gap) + s / 2
        ax.text(x, top / 2, name, ha="center", va="center", fontsize=GRID_FONT_PT)
    for r, chip in enumerate(chips):
        score = "n/a" if chip.score is None else f"{chip.score:.3f}"
        y = top + r * (_LABEL_BAND + rs) + _LABEL_BAND / 2
        text = f"{chip.label}: {_short(chip.key)}, IoU {score}"
        ax.text(0, y, text, ha="left", va="center", fontsize=GRID_FONT_PT)
    if title:
        ax.set_title(title, fontsize=GRID_FONT_PT)
    return _png(fig, dpi=GRID_DPI)


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3) :]


def _nan(values: Iterable[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _finite_pairs(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _nan(a), _nan(b)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]

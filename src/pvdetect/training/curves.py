"""``curves.png``: loss and IoU per epoch of a run, drawn from its ``metrics.csv``."""

from __future__ import annotations

import math
from pathlib import Path

from pvdetect.io import atomic_output
from pvdetect.training.metrics_file import num, read_rows

__all__ = ["plot_curves"]


def plot_curves(csv_path: Path, png_path: Path) -> Path:
    """Loss and IoU per epoch (training and validation) from ``metrics.csv``, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_rows(csv_path)
    epochs = [int(num(r["epoch"])) for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_iou = fig.subplots(1, 2)
    series = [
        (ax_loss, "train_loss", "train", "-"),
        (ax_loss, "val_loss", "val", "-"),
        (ax_iou, "train_iou", "train", "-"),
        (ax_iou, "val_iou", "val", "-"),
    ]
    native = [num(r.get("val_iou_native")) for r in rows]
    if any(
        not math.isnan(n) and n != num(r.get("val_iou")) for n, r in zip(native, rows, strict=True)
    ):
        series.append((ax_iou, "val_iou_native", "val (native resolution)", "--"))
    for ax, col, label, style in series:
        # epochs without validation (val_every > 1) have blank cells: join the others
        vals = [num(r.get(col)) for r in rows]
        pts = [(e, v) for e, v in zip(epochs, vals, strict=True) if not math.isnan(v)]
        ax.plot([e for e, _ in pts], [v for _, v in pts], style, marker="o", ms=3, label=label)
    ax_loss.set_title("loss")
    ax_iou.set_title("PV IoU (threshold 0.5)")
    for ax in (ax_loss, ax_iou):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return png_path

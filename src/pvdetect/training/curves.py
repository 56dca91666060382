"""``curves.png``: loss and IoU per epoch of a run, drawn from its ``metrics.csv``.

The IoU panel shows the validation IoU at each epoch's calibrated threshold
(``val_iou_calibrated``: what a bundle of that epoch would reach) beside the IoU at 0.5 of
training and validation; both panels mark the best epoch, the one ``best.ckpt`` (and so the
bundle) holds: the first epoch with the best value of the monitored metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pvdetect.io import atomic_output
from pvdetect.training.metrics_file import num, read_rows

__all__ = ["best_epoch", "curves_figure", "plot_curves"]


def best_epoch(rows: list[dict[str, str]], monitor: str = "val_loss") -> int | None:
    """The epoch ``best.ckpt`` holds: the first with the lowest ``val_loss`` (or highest
    ``val_iou`` / other monitored score); None when no epoch was validated."""
    mode_min = monitor == "val_loss"  # as the best.ckpt callback of build_trainer
    best: tuple[float, int] | None = None
    for r in rows:
        v = num(r.get(monitor))
        if math.isnan(v):
            continue
        key = v if mode_min else -v
        if best is None or key < best[0]:  # strict: a tie keeps the earlier epoch
            best = (key, int(num(r["epoch"])))
    return best[1] if best is not None else None


def curves_figure(rows: list[dict[str, str]], monitor: str = "val_loss") -> Any:
    """The matplotlib figure of :func:`plot_curves` (loss and IoU panels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [int(num(r["epoch"])) for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_iou = fig.subplots(1, 2)
    series = [
        (ax_loss, "train_loss", "train", "-"),
        (ax_loss, "val_loss", "val", "-"),
        (ax_iou, "train_iou", "train (threshold 0.5)", ":"),
        (ax_iou, "val_iou", "val (threshold 0.5)", ":"),
    ]
    native = [num(r.get("val_iou_native")) for r in rows]
    if any(
        not math.isnan(n) and n != num(r.get("val_iou")) for n, r in zip(native, rows, strict=True)
    ):
        series.append((ax_iou, "val_iou_native", "val (native resolution, 0.5)", "--"))
    if any(not math.isnan(num(r.get("val_iou_calibrated"))) for r in rows):
        series.append((ax_iou, "val_iou_calibrated", "val (calibrated threshold)", "-"))
    for ax, col, label, style in series:
        # epochs without validation (val_every > 1) have blank cells: join the others
        vals = [num(r.get(col)) for r in rows]
        pts = [(e, v) for e, v in zip(epochs, vals, strict=True) if not math.isnan(v)]
        ax.plot([e for e, _ in pts], [v for _, v in pts], style, marker="o", ms=3, label=label)
    best = best_epoch(rows, monitor)
    if best is not None:
        for ax in (ax_loss, ax_iou):
            ax.axvline(best, color="tab:red", lw=1, alpha=0.7, label=f"best epoch {best}")
        row = next(r for r in rows if int(num(r["epoch"])) == best)
        for ax, col in ((ax_loss, "val_loss"), (ax_iou, "val_iou_calibrated")):
            v = num(row.get(col))
            if math.isnan(v) and col == "val_iou_calibrated":
                v = num(row.get("val_iou"))
            if not math.isnan(v):
                ax.plot([best], [v], "*", color="tab:red", ms=12)
    ax_loss.set_title("loss")
    ax_iou.set_title("PV IoU")
    for ax in (ax_loss, ax_iou):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(csv_path: Path, png_path: Path, monitor: str = "val_loss") -> Path:
    """Loss and IoU per epoch (training and validation) from ``metrics.csv``, as a PNG."""
    fig = curves_figure(read_rows(csv_path), monitor)
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return png_path

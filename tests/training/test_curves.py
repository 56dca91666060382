"""Tests of pvdetect.training.curves: the calibrated IoU and the best-epoch marker."""

from __future__ import annotations

from pathlib import Path

from pvdetect.training.curves import best_epoch, curves_figure, plot_curves
from pvdetect.training.metrics_file import write_rows

ROWS = [
    {"epoch": "0", "train_loss": "0.9", "val_loss": "0.8", "train_iou": "0.1", "val_iou": "0.1",
     "val_iou_calibrated": "0.2", "val_threshold": "0.3"},
    {"epoch": "1", "train_loss": "0.7", "val_loss": "", "train_iou": "0.2", "val_iou": "",
     "val_iou_calibrated": ""},
    {"epoch": "2", "train_loss": "0.5", "val_loss": "0.6", "train_iou": "0.3", "val_iou": "0.3",
     "val_iou_calibrated": "0.45", "val_threshold": "0.35"},
    {"epoch": "3", "train_loss": "0.4", "val_loss": "0.6", "train_iou": "0.4", "val_iou": "0.5",
     "val_iou_calibrated": "0.5", "val_threshold": "0.4"},
]  # fmt: skip


def test_best_epoch_follows_the_monitor() -> None:
    assert best_epoch(ROWS, "val_loss") == 2  # a tie keeps the earlier epoch, as best.ckpt
    assert best_epoch(ROWS, "val_iou") == 3
    assert best_epoch(ROWS[1:2], "val_loss") is None


def test_figure_shows_calibrated_iou_and_marks_the_best_epoch(tmp_path: Path) -> None:
    fig = curves_figure(ROWS, "val_loss")
    ax_loss, ax_iou = fig.axes
    labels = {line.get_label(): line for line in ax_iou.get_lines()}
    calibrated = labels["val (calibrated threshold)"]
    assert list(calibrated.get_xdata()) == [0, 2, 3]
    assert list(calibrated.get_ydata()) == [0.2, 0.45, 0.5]
    for ax in (ax_loss, ax_iou):
        marker = next(ln for ln in ax.get_lines() if ln.get_label() == "best epoch 2")
        assert list(marker.get_xdata()) == [2, 2]
    csv = tmp_path / "metrics.csv"
    write_rows(csv, ROWS)
    png = plot_curves(csv, tmp_path / "curves.png", monitor="val_iou")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

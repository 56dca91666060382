"""Lightning callbacks of a training run: ``metrics.csv`` rows and validating the last epoch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint

from pvdetect.training.curves import plot_curves
from pvdetect.training.metrics_file import METRIC_COLUMNS, num, read_rows, write_rows

__all__ = ["MetricsCSV", "ValidateLastEpoch"]


class MetricsCSV(Checkpoint):
    """Writes ``metrics.csv`` (and ``curves.png``) on rank 0 after every epoch.

    A :class:`Checkpoint` subclass so that Lightning calls it after the module's
    ``on_train_epoch_end`` (where the training metrics are logged), like the other
    monitoring callbacks; it sits before the ``last.ckpt`` callback so the row of an epoch
    is on disk when that epoch's checkpoint is. On (re)start, rows of epochs that are not
    in the checkpoint are dropped, so resuming appends without duplicates. ``extra_columns``
    (validation metrics per source, ``val_iou@NAME``) follow the standard columns.
    """

    def __init__(
        self, csv_path: Path, png_path: Path | None = None, extra_columns: Sequence[str] = ()
    ) -> None:
        self.csv_path = Path(csv_path)
        self.png_path = png_path
        self.columns = (*METRIC_COLUMNS, *extra_columns)
        self._validated: int | None = None  # epoch of the last validation

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    @property
    def state_key(self) -> str:
        return "MetricsCSV"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        rows = read_rows(self.csv_path)
        keep = [r for r in rows if num(r.get("epoch")) < trainer.current_epoch]
        if len(keep) != len(rows) or (rows and list(rows[0]) != list(self.columns)):
            write_rows(self.csv_path, keep, self.columns)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch}
        for col in self.columns[1:]:
            if col == "lr":
                opt = trainer.optimizers[0] if trainer.optimizers else None
                row[col] = opt.param_groups[0]["lr"] if opt is not None else ""
            elif col.startswith("val_") and self._validated != trainer.current_epoch:
                row[col] = ""  # not validated this epoch (val_every > 1)
            elif col in m:
                row[col] = float(m[col])
            else:
                row[col] = ""
        rows = [r for r in read_rows(self.csv_path) if num(r.get("epoch")) < row["epoch"]]
        write_rows(self.csv_path, [*rows, row], self.columns)
        if self.png_path is not None:
            try:
                plot_curves(self.csv_path, self.png_path)
            except (OSError, ValueError) as exc:  # a plot must never stop training
                warnings.warn(f"{self.png_path}: cannot draw curves ({exc})", stacklevel=1)


class ValidateLastEpoch(Callback):
    """With ``val_every`` > 1, also validate the last epoch of ``max_epochs``."""

    def __init__(self, every: int) -> None:
        self.every = int(every)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        end = trainer.max_epochs
        last = end is not None and trainer.current_epoch + 1 >= end
        trainer.check_val_every_n_epoch = 1 if last else self.every

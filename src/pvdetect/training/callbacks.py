"""Lightning callbacks of a training run: ``metrics.csv`` rows, progress, the last epoch.

Progress (:class:`ProgressLog`) replaces Lightning's own bar: on a terminal, a bar over the
epochs and one over the steps of the current epoch (tqdm, with ETA); elsewhere (a log file, a
batch job) one plain line per epoch. The per-epoch line always goes to ``RUN/train.log``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint

from pvdetect import logs
from pvdetect.training.curves import plot_curves
from pvdetect.training.metrics_file import METRIC_COLUMNS, num, read_rows, write_rows

__all__ = ["EPOCH_LINE_METRICS", "MetricsCSV", "ProgressLog", "ValidateLastEpoch", "epoch_line"]

log = logging.getLogger(__name__)

#: metrics of the per-epoch line, in order, when logged that epoch
EPOCH_LINE_METRICS = ("train_loss", "val_loss", "val_iou", "val_iou_calibrated", "val_f1")


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
        self,
        csv_path: Path,
        png_path: Path | None = None,
        monitor: str = "val_loss",
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.csv_path = Path(csv_path)
        self.png_path = png_path
        self.monitor = monitor  # what best.ckpt is chosen by (marked in the curves)
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
                plot_curves(self.csv_path, self.png_path, monitor=self.monitor)
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


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict[str, Any], seconds: float) -> str:
    """``epoch 2 [3/24]: train_loss 0.4123 val_loss 0.3987 ... lr 1.2e-03 (12.3 s)``.

    ``epoch`` is numbered as in ``metrics.csv`` and ``curves.png`` (from 0); the bracket
    counts epochs done of the total.
    """
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    parts = [f"epoch {epoch} [{epoch + 1}{total}]:"]
    for key in EPOCH_LINE_METRICS:
        value = metrics.get(key)
        if value is not None and not math.isnan(float(value)):
            parts.append(f"{key} {float(value):.4f}")
    if metrics.get("lr") is not None:
        parts.append(f"lr {float(metrics['lr']):.2e}")
    return " ".join(parts) + f" ({seconds:.1f} s)"


class ProgressLog(Checkpoint):
    """Epoch and step bars on a terminal, one line per epoch otherwise (and in train.log).

    A :class:`Checkpoint` subclass, like :class:`MetricsCSV`, so that the epoch's metrics
    (logged in the module's ``on_train_epoch_end``) are there when its line is written; it
    must come after the ``best.ckpt`` callback in the list (Lightning's
    ``trainer.checkpoint_callback`` is the first checkpoint callback).
    """

    def __init__(self, bars: bool = True) -> None:
        self.bars = bars
        self._epochs: Any = None
        self._steps: Any = None
        self._start = 0.0
        self._validated: int | None = None

    @property
    def state_key(self) -> str:
        return "ProgressLog"

    def _bar(self, **kw: Any) -> Any:
        return logs.progress(**kw) if self.bars else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            self._epochs = self._bar(
                total=total, initial=trainer.current_epoch, desc="epochs", unit="epoch", leave=True
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        if trainer.is_global_zero:
            steps = trainer.num_training_batches
            total = steps if isinstance(steps, int) or math.isfinite(steps) else None
            desc = f"epoch {trainer.current_epoch}"
            self._steps = self._bar(total=total, desc=desc, unit="step")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._steps is not None:
            self._steps.update(1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if not k.startswith("val_") or self._validated == trainer.current_epoch
        }
        if trainer.optimizers:
            metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        line = epoch_line(
            trainer.current_epoch, trainer.max_epochs, metrics, time.perf_counter() - self._start
        )
        if self._epochs is not None and not self._epochs.disable:
            post = {k: f"{metrics[k]:.3f}" for k in ("train_loss", "val_iou") if k in metrics}
            self._epochs.set_postfix(post, refresh=False)
            self._epochs.update(1)
            log.info("%s", line, extra=logs.FILE_ONLY)  # the bar shows it on the terminal
        else:
            log.info("%s", line)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for bar in (self._steps, self._epochs):
            if bar is not None:
                bar.close()
        self._steps = self._epochs = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException
    ) -> None:
        self.on_train_end(trainer, pl_module)

"""``pvdetect train``: train a segmentation model and write a run folder.

The run folder::

    RUN/config.yaml            resolved configuration (reusable with --config)
    RUN/checkpoints/best.ckpt  best epoch by the validation loss (or IoU, ``monitor``)
    RUN/checkpoints/last.ckpt  end of the last finished epoch (for --resume)
    RUN/metrics.csv            one row per epoch
    RUN/curves.png             loss and IoU per epoch, training and validation
    RUN/bundle/                model bundle for ``predict`` / ``evaluate``
    RUN/logs/                  TensorBoard logs (with --tensorboard)

Options come from the dataclass defaults, then ``--config cfg.yaml``, then the command-line
flags that were given. ``--resume`` continues from ``checkpoints/last.ckpt`` with the saved
configuration (flags still override it, e.g. a larger ``--epochs`` extends a finished run).
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvdetect.config import (
    TrainConfig,
    config_from_dict,
    save_config,
)
from pvdetect.device import env_rank_zero, resolve_precision
from pvdetect.errors import ConfigError, OutputError

if TYPE_CHECKING:
    import lightning as L

    from pvdetect.data.packed import PackedCache
    from pvdetect.training.task import SegmentationTask

__all__ = [
    "METRIC_COLUMNS",
    "build_trainer",
    "calibrate",
    "plot_curves",
    "train",
]

#: columns of RUN/metrics.csv
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "train_iou",
    "val_iou",
    "val_f1",
    "lr",
    "val_iou_native",
    "val_f1_native",
)

#: calibrated thresholds are kept inside [THRESHOLD_MIN, 1 - THRESHOLD_MIN]
THRESHOLD_MIN = 0.01


# --------------------------------------------------------------------------- helpers


def _resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute paths for everything path-like, so the saved config works from anywhere."""
    cfg = config_from_dict(cfg.to_dict())
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())  # type: ignore[arg-type]
    cfg.out = str(Path(cfg.out).expanduser().resolve())  # type: ignore[arg-type]
    if cfg.data.cache_dir:
        cfg.data.cache_dir = str(Path(cfg.data.cache_dir).expanduser().resolve())
    if cfg.upscale.sr_weights:
        cfg.upscale.sr_weights = str(Path(cfg.upscale.sr_weights).expanduser().resolve())
    w = cfg.model.weights
    if w and Path(w).expanduser().exists():
        cfg.model.weights = str(Path(w).expanduser().resolve())
    return cfg


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    from pvdetect.data.raster import atomic_output

    with atomic_output(path) as tmp, Path(tmp).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_curves(csv_path: Path, png_path: Path) -> Path:
    """Loss and IoU per epoch (training and validation) from ``metrics.csv``, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pvdetect.data.raster import atomic_output

    rows = _read_rows(csv_path)
    epochs = [int(_num(r["epoch"])) for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_iou = fig.subplots(1, 2)
    series = [
        (ax_loss, "train_loss", "train", "-"),
        (ax_loss, "val_loss", "val", "-"),
        (ax_iou, "train_iou", "train", "-"),
        (ax_iou, "val_iou", "val", "-"),
    ]
    native = [_num(r.get("val_iou_native")) for r in rows]
    if any(
        not math.isnan(n) and n != _num(r.get("val_iou")) for n, r in zip(native, rows, strict=True)
    ):
        series.append((ax_iou, "val_iou_native", "val (native resolution)", "--"))
    for ax, col, label, style in series:
        # epochs without validation (val_every > 1) have blank cells: join the others
        vals = [_num(r.get(col)) for r in rows]
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


def _metrics_callback_class() -> type:
    from lightning.pytorch.callbacks import Checkpoint

    class MetricsCSV(Checkpoint):
        """Writes ``metrics.csv`` (and ``curves.png``) on rank 0 after every epoch.

        A :class:`Checkpoint` subclass so that Lightning calls it after the module's
        ``on_train_epoch_end`` (where the training metrics are logged), like the other
        monitoring callbacks; it sits before the ``last.ckpt`` callback so the row of an epoch
        is on disk when that epoch's checkpoint is. On (re)start, rows of epochs that are not
        in the checkpoint are dropped, so resuming appends without duplicates.
        """

        def __init__(self, csv_path: Path, png_path: Path | None = None) -> None:
            self.csv_path = Path(csv_path)
            self.png_path = png_path
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
            rows = _read_rows(self.csv_path)
            keep = [r for r in rows if _num(r.get("epoch")) < trainer.current_epoch]
            if len(keep) != len(rows) or (rows and list(rows[0]) != list(METRIC_COLUMNS)):
                _write_rows(self.csv_path, keep)

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            m = trainer.callback_metrics
            row: dict[str, Any] = {"epoch": trainer.current_epoch}
            for col in METRIC_COLUMNS[1:]:
                if col == "lr":
                    opt = trainer.optimizers[0] if trainer.optimizers else None
                    row[col] = opt.param_groups[0]["lr"] if opt is not None else ""
                elif col.startswith("val_") and self._validated != trainer.current_epoch:
                    row[col] = ""  # not validated this epoch (val_every > 1)
                elif col in m:
                    row[col] = float(m[col])
                else:
                    row[col] = ""
            rows = [r for r in _read_rows(self.csv_path) if _num(r.get("epoch")) < row["epoch"]]
            _write_rows(self.csv_path, [*rows, row])
            if self.png_path is not None:
                try:
                    plot_curves(self.csv_path, self.png_path)
                except (OSError, ValueError) as exc:  # a plot must never stop training
                    warnings.warn(f"{self.png_path}: cannot draw curves ({exc})", stacklevel=1)

    return MetricsCSV


def _last_epoch_validation_class() -> type:
    from lightning.pytorch.callbacks import Callback

    class ValidateLastEpoch(Callback):
        """With ``val_every`` > 1, also validate the last epoch of ``max_epochs``."""

        def __init__(self, every: int) -> None:
            self.every = int(every)

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            end = trainer.max_epochs
            last = end is not None and trainer.current_epoch + 1 >= end
            trainer.check_val_every_n_epoch = 1 if last else self.every

    return ValidateLastEpoch


def build_trainer(cfg: TrainConfig, run_dir: Path, precision: str | None = None) -> L.Trainer:
    """The Lightning Trainer and callbacks for ``cfg`` writing into ``run_dir``."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    ckpt_dir = run_dir / "checkpoints"
    mode = "min" if cfg.monitor == "val_loss" else "max"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=cfg.monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # written at the end of every epoch (whether it validated or not), for --resume after an
    # interruption; save_last=True alone would only write it when training ends
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    metrics = _metrics_callback_class()(run_dir / "metrics.csv", run_dir / "curves.png")
    callbacks: list[Any] = [
        best,
        metrics,
        last,
        EarlyStopping(
            monitor="val_loss", mode="min", patience=cfg.patience, min_delta=cfg.min_delta
        ),
    ]
    if cfg.val_every > 1:
        callbacks.append(_last_epoch_validation_class()(cfg.val_every))
    logger: Any = False
    if cfg.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    accelerator = "gpu" if cfg.accelerator == "cuda" else cfg.accelerator
    return L.Trainer(
        accelerator=accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=precision or resolve_precision(cfg.precision, cfg.accelerator),
        max_epochs=cfg.epochs,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        accumulate_grad_batches=cfg.accumulate,
        gradient_clip_val=cfg.optim.gradient_clip,
        limit_train_batches=cfg.max_train_batches if cfg.max_train_batches else 1.0,
        limit_val_batches=cfg.max_val_batches if cfg.max_val_batches else 1.0,
        check_val_every_n_epoch=cfg.val_every,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=cfg.progress,
        enable_model_summary=cfg.progress,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        log_every_n_steps=1,
    )


def calibrate(task: SegmentationTask, metric: str = "f1") -> tuple[float, dict[str, Any]]:
    """Threshold maximising ``metric`` on the last validation epoch and the metrics there.

    Calibrated on the native-resolution probabilities (what ``predict`` writes by default);
    the threshold is kept within ``[0.01, 0.99]``.
    """
    if task.last_val is None:
        raise RuntimeError("no validation epoch to calibrate on")
    native = task.last_val["hist_native"]
    up = task.last_val["hist"]
    thr, _ = native.best_threshold(metric)
    thr = min(max(thr, THRESHOLD_MIN), 1.0 - THRESHOLD_MIN)
    conf = native.confusion(thr)
    at_half = native.confusion(0.5)
    metrics: dict[str, Any] = {**conf.to_dict(), "loss": float(task.last_val["loss"])}
    metrics["threshold"] = thr
    metrics["iou_at_0.5"] = at_half.iou
    metrics["f1_at_0.5"] = at_half.f1
    if task.factor > 1:
        c_up = up.confusion(thr)
        metrics["iou_upscaled"] = c_up.iou
        metrics["f1_upscaled"] = c_up.f1
    metrics = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None)
               for k, v in metrics.items()}  # fmt: skip
    return thr, metrics


def _tile_size(cfg: TrainConfig, cache: PackedCache) -> tuple[int, int]:
    """Tile size and overlap for the bundle, in input pixels (what ``predict`` tiles by).

    The tile covers what one training input covered (the chip, or ``crop_size / factor``),
    rounded up to the model's input multiple.
    """
    from pvdetect.model.factory import required_multiple

    h, w = cache.images.shape[-2:]
    f = cfg.upscale.factor
    model_px = cfg.data.crop_size if cfg.data.crop_size else min(h, w) * f
    tile = max(1, model_px // f)
    m = required_multiple(cfg.model.arch, cfg.model.encoder)
    m_in = m // math.gcd(m, f)
    tile = -(-tile // m_in) * m_in
    overlap = cfg.overlap if cfg.overlap is not None else tile // 4
    overlap = min(overlap, tile - 1)
    return tile, overlap


# --------------------------------------------------------------------------- training


def train(config: TrainConfig) -> Path:
    """Train per ``config`` and write the run folder; returns its path.

    Raises:
        ConfigError: invalid options, or ``resume`` without a checkpoint.
        DataError: unusable dataset (missing, empty split, unreadable files).
        OutputError: the run folder holds a run already (without ``resume``) or cannot be
            written.
    """
    if not config.data.root:
        raise ConfigError("data.root: no dataset given")
    if not config.out:
        raise ConfigError("out: no run folder given")
    cfg = _resolve_paths(config)
    run_dir = Path(cfg.out)  # type: ignore[arg-type]
    ckpt_dir = run_dir / "checkpoints"
    last_ckpt, best_ckpt = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    rank_zero = env_rank_zero()
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder")
    if cfg.resume:
        if not last_ckpt.is_file():
            raise ConfigError(f"{last_ckpt}: no checkpoint to resume from")
    elif rank_zero and (last_ckpt.exists() or best_ckpt.exists()):
        raise OutputError(
            f"{run_dir}: already holds a training run; pass --resume to continue it or "
            f"choose another --out"
        )

    import lightning as L
    import torch

    from pvdetect.data.layouts import find_chips
    from pvdetect.data.module import PVDataModule
    from pvdetect.data.packed import build_cache
    from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA
    from pvdetect.model.bundle import BundleMeta, UpscaleMeta, save_bundle
    from pvdetect.training.task import SegmentationTask

    d = cfg.data
    records = find_chips(
        Path(d.root),  # type: ignore[arg-type]
        seed=cfg.seed,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
    )
    cache = build_cache(records, d.cache_dir, d.band_order)
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )
    dm = PVDataModule(
        cache,
        batch_size=d.batch_size,
        val_batch_size=d.val_batch_size,
        test_batch_size=d.test_batch_size,
        num_workers=d.num_workers,
        drop_empty=d.drop_empty,
        oversample_pv=d.oversample_pv,
        seed=cfg.seed,
        pin_memory=on_gpu,
        source=d.root,
    )
    _, channels, height, width = cache.images.shape
    tile, overlap = _tile_size(cfg, cache)

    if on_gpu:
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 parts
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = SegmentationTask(
        cfg, cache.stats, in_channels=channels, chip_size=(height, width), pretrained=not cfg.resume
    )
    if rank_zero:
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{run_dir}: cannot create the run folder ({exc.strerror})") from None
        saved = config_from_dict(cfg.to_dict())
        saved.resume = False
        save_config(saved, run_dir / "config.yaml")

    trainer = build_trainer(cfg, run_dir, precision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        if cfg.resume:  # the run's own checkpoints are expected there
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        trainer.fit(
            task,
            datamodule=dm,
            ckpt_path=str(last_ckpt) if cfg.resume else None,
            weights_only=True,
        )
        if trainer.interrupted:
            raise KeyboardInterrupt
        source = best_ckpt if best_ckpt.is_file() else last_ckpt
        trainer.validate(
            task, datamodule=dm, ckpt_path=str(source), weights_only=True, verbose=False
        )
    threshold, val_metrics = calibrate(task, cfg.threshold_metric)

    if trainer.is_global_zero:
        meta = BundleMeta(
            arch=cfg.model.arch,
            encoder=cfg.model.encoder,
            band_stats=cache.stats.to_dict(),
            in_channels=channels,
            band_order=list(BAND_NAMES[:channels])
            if channels <= len(BAND_NAMES)
            else [f"band{i + 1}" for i in range(channels)],
            input_scale=1.0,
            nodata=_bundle_nodata(cache, DEFAULT_NODATA),
            threshold=threshold,
            threshold_metric=cfg.threshold_metric,
            upscale=UpscaleMeta(
                factor=cfg.upscale.factor,
                method=cfg.upscale.method,
                sr_weights=cfg.upscale.sr_weights if cfg.upscale.factor > 1 else None,
            ),
            tile_size=tile,
            overlap=overlap,
            data_fingerprint=cache.fingerprint,
            val_metrics={**val_metrics, "checkpoint": source.name},
        )
        save_bundle(run_dir / "bundle", task.model, meta)
        if (run_dir / "metrics.csv").is_file():
            plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    trainer.strategy.barrier("pvdetect-bundle")
    if not trainer.is_global_zero:
        sys.stdout.flush()
    return run_dir


def _bundle_nodata(cache: PackedCache, default: float) -> float:
    """The chips' image nodata value when finite, else the default."""
    value = cache.chips[0].get("nodata", default) if cache.chips else default
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default

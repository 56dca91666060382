"""``pvdetect train``: train a segmentation model and write a run folder.

The run folder::

    RUN/config.yaml            resolved configuration (reusable with --config)
    RUN/checkpoints/best.ckpt  best epoch by the validation loss (or IoU, ``monitor``)
    RUN/checkpoints/last.ckpt  end of the last finished epoch (for --resume)
    RUN/metrics.csv            one row per epoch
    RUN/curves.png             loss and IoU per epoch, training and validation, best epoch
    RUN/train.log              the run's messages and one line per epoch, with time stamps
    RUN/bundle/                model bundle for ``predict`` / ``evaluate``
    RUN/logs/                  TensorBoard logs (with --tensorboard)

Several sources (``data.sources``, ``data.synthetic``) train together
(:mod:`pvdetect.data.sources`); ``metrics.csv`` then has ``val_loss@NAME``, ``val_iou@NAME`` and
``val_f1@NAME`` columns per source with validation chips and ``bundle.json`` a ``sources``
entry. With ``cv`` (and no ``cv_fold``) :func:`train` runs the cross-validation of
:mod:`pvdetect.training.cv`.

Options come from the dataclass defaults, then ``--config cfg.yaml``, then the command-line
flags that were given. ``--resume`` continues from ``checkpoints/last.ckpt`` with the saved
configuration (flags still override it, e.g. a larger ``--epochs`` extends a finished run).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvdetect import logs
from pvdetect.config import TrainConfig, config_from_dict, save_config
from pvdetect.device import env_rank_zero, resolve_precision
from pvdetect.errors import ConfigError, OutputError
from pvdetect.io import first_line
from pvdetect.training.calibration import calibrate, source_metrics
from pvdetect.training.checks import check_devices, check_extras, check_resume_checkpoint
from pvdetect.training.curves import plot_curves
from pvdetect.training.start import calibrated, open_start

if TYPE_CHECKING:
    import lightning as L

    from pvdetect.data.module import PVDataModule
    from pvdetect.data.packed import PackedCache
    from pvdetect.data.sources import SourceSet
    from pvdetect.model.bundle import BundleMeta
    from pvdetect.training.task import SegmentationTask

__all__ = ["RunPaths", "build_trainer", "calibrate", "train"]

#: the run's log file, appended to by every (re)start
LOG_NAME = "train.log"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def _resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute paths for everything path-like, so the saved config works from anywhere."""
    cfg = config_from_dict(cfg.to_dict())
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    for src in cfg.data.sources:
        src.root = str(Path(src.root).expanduser().resolve())
    for part in (cfg.data, *cfg.data.sources):  # an exclusion file (a list stays as it is)
        if isinstance(part.exclude, str):
            part.exclude = str(Path(part.exclude).expanduser().resolve())
    cfg.out = str(Path(cfg.out).expanduser().resolve())  # type: ignore[arg-type]
    if cfg.data.cache_dir:
        cfg.data.cache_dir = str(Path(cfg.data.cache_dir).expanduser().resolve())
    if cfg.upscale.sr_weights:
        cfg.upscale.sr_weights = str(Path(cfg.upscale.sr_weights).expanduser().resolve())
    w = cfg.model.weights
    if w and Path(w).expanduser().exists():
        cfg.model.weights = str(Path(w).expanduser().resolve())
    return cfg


def _checkpoints(cfg: TrainConfig, ckpt_dir: Path) -> tuple[Any, Any]:
    """``best.ckpt`` (by ``cfg.monitor``) and ``last.ckpt`` (every epoch) callbacks."""
    from lightning.pytorch.callbacks import ModelCheckpoint

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
    return best, last


def build_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    precision: str | None = None,
    extra_columns: tuple[str, ...] = (),
) -> L.Trainer:
    """The Lightning Trainer and callbacks for ``cfg`` writing into ``run_dir``.

    ``extra_columns``: further ``metrics.csv`` columns (the per-source validation metrics).
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

    from pvdetect.training.callbacks import MetricsCSV, ProgressLog, ValidateLastEpoch

    best, last = _checkpoints(cfg, run_dir / "checkpoints")
    metrics = MetricsCSV(
        run_dir / "metrics.csv",
        run_dir / "curves.png",
        monitor=cfg.monitor,
        extra_columns=extra_columns,
    )
    callbacks: list[Any] = [
        best,
        metrics,
        ProgressLog(bars=cfg.progress),
        last,
        EarlyStopping(
            monitor="val_loss", mode="min", patience=cfg.patience, min_delta=cfg.min_delta
        ),
    ]
    if cfg.val_every > 1:
        callbacks.append(ValidateLastEpoch(cfg.val_every))
    logger: Any = False
    if cfg.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    accelerator = "gpu" if cfg.accelerator == "cuda" else cfg.accelerator
    logs.quiet_lightning(logs.is_verbose())  # no device banners or adverts unless -v
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
        enable_progress_bar=False,  # ProgressLog: bars on a terminal, lines elsewhere
        enable_model_summary=logs.is_verbose(),
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        log_every_n_steps=1,
    )


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


@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder that training reads and writes."""

    run_dir: Path

    @property
    def checkpoints(self) -> Path:
        """``RUN/checkpoints``."""
        return self.run_dir / "checkpoints"

    @property
    def last(self) -> Path:
        """``RUN/checkpoints/last.ckpt`` (end of the last finished epoch)."""
        return self.checkpoints / "last.ckpt"

    @property
    def best(self) -> Path:
        """``RUN/checkpoints/best.ckpt`` (best validation so far)."""
        return self.checkpoints / "best.ckpt"


def _check_run_dir(cfg: TrainConfig, paths: RunPaths) -> None:
    """Refuse a run folder that is a file, holds another run, or has nothing to resume."""
    run_dir = paths.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder")
    if cfg.resume:
        if not paths.last.is_file():
            raise ConfigError(f"{paths.last}: no checkpoint to resume from")
    elif env_rank_zero() and (paths.last.exists() or paths.best.exists()):
        raise OutputError(
            f"{run_dir}: already holds a training run; pass --resume to continue it or "
            f"choose another --out"
        )


def _on_gpu(cfg: TrainConfig) -> bool:
    import torch

    return cfg.accelerator in ("gpu", "cuda") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )


def _data(cfg: TrainConfig) -> tuple[SourceSet, PVDataModule]:
    """The packed sources (the fold's splits with ``cv_fold``) and the data module."""
    from pvdetect.data.module import PVDataModule
    from pvdetect.data.sources import cv_splits
    from pvdetect.training.sources import open_sources

    d = cfg.data
    cache = open_sources(d, seed=cfg.seed)
    if cfg.cv and cfg.cv_fold:
        cache = cv_splits(cache, cfg.cv, cfg.cv_fold, seed=cfg.seed)
    dm = PVDataModule(
        cache,
        batch_size=d.batch_size,
        val_batch_size=d.val_batch_size,
        test_batch_size=d.test_batch_size,
        num_workers=d.num_workers,
        drop_empty=d.drop_empty,
        oversample_pv=d.oversample_pv,
        seed=cfg.seed,
        pin_memory=_on_gpu(cfg),
        source=cache.sources[0].where if len(cache.sources) == 1 else "training sources",
        synthetic_until=cfg.epochs - d.synthetic.off_last if d.synthetic.off_last else None,
    )
    return cache, dm


def _source_columns(cache: SourceSet) -> tuple[str, ...]:
    """``metrics.csv`` columns of the sources with validation chips (several sources only)."""
    if len(cache.sources) < 2:
        return ()
    names = [n for s, n in enumerate(cache.names) if cache.indices("val", s).size]
    return tuple(f"{m}@{n}" for n in names for m in ("val_loss", "val_iou", "val_f1"))


def _start_run_dir(cfg: TrainConfig, paths: RunPaths) -> None:
    """Create the run folder (rank 0) and save the resolved configuration in it."""
    if not env_rank_zero():
        return
    try:
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{paths.run_dir}: cannot create the run folder ({exc.strerror})"
        ) from None
    saved = config_from_dict(cfg.to_dict())
    saved.resume = False
    save_config(saved, paths.run_dir / "config.yaml")
    logs.attach_file(paths.run_dir / LOG_NAME)
    log.info(
        "%s %s: %s/%s, %s epochs, data %s",
        "resuming" if cfg.resume else "training",
        paths.run_dir,
        cfg.model.arch,
        cfg.model.encoder,
        cfg.epochs,
        cfg.data.root,
    )


def _fit(
    cfg: TrainConfig, task: SegmentationTask, dm: PVDataModule, paths: RunPaths, precision: str
) -> tuple[L.Trainer, Path]:
    """Fit (or resume), then validate the checkpoint the bundle will hold; returns it."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    extra = _source_columns(dm.cache) if hasattr(dm.cache, "sources") else ()
    try:
        trainer = build_trainer(cfg, paths.run_dir, precision, extra)
    except (MisconfigurationException, ValueError) as exc:
        raise ConfigError(f"cannot set up training: {first_line(exc)}") from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        # torch's deprecation of a class Lightning's batch flattening still uses (noise only)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        if cfg.resume:  # the run's own checkpoints are expected there
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        trainer.fit(
            task,
            datamodule=dm,
            ckpt_path=str(paths.last) if cfg.resume else None,
            weights_only=True,
        )
        if trainer.interrupted:
            raise KeyboardInterrupt
        source = paths.best if paths.best.is_file() else paths.last
        trainer.validate(
            task, datamodule=dm, ckpt_path=str(source), weights_only=True, verbose=False
        )
    return trainer, source


def train(config: TrainConfig) -> Path:
    """Train per ``config`` and write the run folder; returns its path.

    Raises:
        ConfigError: invalid options, or ``resume`` without a checkpoint.
        DataError: unusable dataset (missing, empty split, unreadable files).
        OutputError: the run folder holds a run already (without ``resume``) or cannot be
            written.
    """
    if not config.data.has_data():
        raise ConfigError("data.root: no dataset given")
    if not config.out:
        raise ConfigError("out: no run folder given")
    if config.cv and config.cv_fold is None:  # the folds are runs of their own
        raise ConfigError("cv: run the folds with pvdetect.training.cv.cross_validate")
    cfg = _resolve_paths(config)
    paths = RunPaths(Path(cfg.out))  # type: ignore[arg-type]
    _check_run_dir(cfg, paths)
    check_devices(cfg)
    check_extras(cfg)

    import lightning as L
    import torch

    from pvdetect.model.bundle import save_bundle
    from pvdetect.training.task import SegmentationTask

    cache, dm = _data(cfg)
    start = open_start(cfg, cache)
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    _, channels, height, width = cache.images.shape
    if _on_gpu(cfg):
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 parts
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = SegmentationTask(
        cfg,
        cache.stats,
        in_channels=channels,
        chip_size=(height, width),
        pretrained=not cfg.resume and start is None,
        sources=cache.names,
        source_of=cache.source_of.tolist(),
        primary=cache.primary(),
    )
    if cfg.resume:
        check_resume_checkpoint(paths.last, task)
    elif start is not None:
        task.model.load_state_dict(start.state)
    new_run = not paths.run_dir.exists()
    _start_run_dir(cfg, paths)
    try:
        trainer, source = _fit(cfg, task, dm, paths, precision)
    except BaseException:
        # a start-up failure leaves no run folder holding just config.yaml behind
        if new_run and env_rank_zero() and not paths.last.exists():
            shutil.rmtree(paths.run_dir, ignore_errors=True)
        raise
    threshold, val_metrics = calibrated(cfg, task, trainer, dm, start)
    if trainer.is_global_zero:
        per_source = source_metrics(task, threshold)
        meta = bundle_meta(cfg, cache, threshold, {**val_metrics, "checkpoint": source.name},
                           per_source)  # fmt: skip
        save_bundle(paths.run_dir / "bundle", task.model, meta)
        if (paths.run_dir / "metrics.csv").is_file():
            plot_curves(
                paths.run_dir / "metrics.csv", paths.run_dir / "curves.png", monitor=cfg.monitor
            )
        log.info(
            "bundle %s from %s: threshold %.3f, validation IoU %.4f F1 %.4f",
            paths.run_dir / "bundle",
            source.name,
            threshold,
            val_metrics.get("iou") or float("nan"),
            val_metrics.get("f1") or float("nan"),
        )
    trainer.strategy.barrier("pvdetect-bundle")
    if not trainer.is_global_zero:
        sys.stdout.flush()
    return paths.run_dir


def bundle_meta(
    cfg: TrainConfig,
    cache: PackedCache | SourceSet,
    threshold: float,
    val_metrics: dict[str, Any],
    per_source: dict[str, dict[str, Any]] | None = None,
) -> BundleMeta:
    """The bundle metadata of a finished run: what predict and evaluate need to know.

    With a :class:`~pvdetect.data.sources.SourceSet` the ``sources`` entry describes each
    source (its validation metrics from ``per_source``; with one source, ``val_metrics``).
    """
    from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA
    from pvdetect.model.bundle import BundleMeta, UpscaleMeta

    sources = None
    if hasattr(cache, "describe"):
        sources = cache.describe()
        for entry in sources:
            if len(sources) == 1:
                entry["val_metrics"] = dict(val_metrics)
            else:
                entry["val_metrics"] = dict((per_source or {}).get(entry["name"], {}))

    channels = cache.images.shape[1]
    tile, overlap = _tile_size(cfg, cache)
    return BundleMeta(
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
        val_metrics=val_metrics,
        sources=sources,
    )


def _bundle_nodata(cache: PackedCache, default: float) -> float:
    """The chips' image nodata value when finite, else the default."""
    value = cache.chips[0].get("nodata", default) if cache.chips else default
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default

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
from pvdetect.extras import require
from pvdetect.io import first_line
from pvdetect.training.curves import plot_curves

if TYPE_CHECKING:
    import lightning as L

    from pvdetect.data.module import PVDataModule
    from pvdetect.data.packed import PackedCache
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


def build_trainer(cfg: TrainConfig, run_dir: Path, precision: str | None = None) -> L.Trainer:
    """The Lightning Trainer and callbacks for ``cfg`` writing into ``run_dir``."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from pvdetect.training.callbacks import MetricsCSV, ProgressLog, ValidateLastEpoch

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
    metrics = MetricsCSV(run_dir / "metrics.csv", run_dir / "curves.png", monitor=cfg.monitor)
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


def calibrate(task: SegmentationTask, metric: str = "f1") -> tuple[float, dict[str, Any]]:
    """Threshold maximising ``metric`` on the last validation epoch and the metrics there.

    Calibrated on the native-resolution probabilities (what ``predict`` writes by default);
    the threshold is kept within ``[0.01, 0.99]``.
    """
    from pvdetect.training.task import THRESHOLD_MIN

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


def check_devices(cfg: TrainConfig) -> None:
    """Refuse an accelerator or device list this machine does not have (before any folder)."""
    import torch

    acc = cfg.accelerator
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--accelerator {acc}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        devices = cfg.devices
        if isinstance(devices, int) and devices > count:
            raise ConfigError(f"--devices {devices}: only {count} CUDA device(s) present")
        if isinstance(devices, list) and devices and max(devices) >= count:
            raise ConfigError(f"--devices {devices}: only {count} CUDA device(s) present")
    if acc == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("--accelerator mps: Apple MPS is not available on this machine")


def check_extras(cfg: TrainConfig) -> None:
    """Refuse options whose optional packages are missing, naming the extra to install."""
    if cfg.tensorboard:
        require("tensorboard", "tensorboard", "--tensorboard")
    if cfg.upscale.factor > 1 and cfg.upscale.method == "sr":
        require("spandrel", "sr", "--upscale-method sr")


def check_resume_checkpoint(path: Path, task: SegmentationTask) -> None:
    """Refuse a truncated or foreign ``last.ckpt`` with one line, before Lightning opens it.

    The file is read the way Lightning will read it (``weights_only``: no code runs), and its
    model weights must be this run's network.
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for broken files
        raise ConfigError(
            f"{path}: not a readable checkpoint ({first_line(exc)}); it cannot be resumed"
        ) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "epoch" not in ckpt:
        raise ConfigError(f"{path}: not a pvdetect training checkpoint; it cannot be resumed")
    want = {k for k in task.state_dict() if k.startswith("model.")}
    have = {k for k in state if k.startswith("model.")}
    if want != have or any(
        tuple(state[k].shape) != tuple(v.shape) for k, v in task.state_dict().items() if k in want
    ):
        raise ConfigError(
            f"{path}: checkpoint of another network than {task.cfg.model.arch}/"
            f"{task.cfg.model.encoder} with {task.hparams['in_channels']} bands; it cannot be "
            "resumed with this configuration"
        )


def _on_gpu(cfg: TrainConfig) -> bool:
    import torch

    return cfg.accelerator in ("gpu", "cuda") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )


def _data(cfg: TrainConfig) -> tuple[PackedCache, PVDataModule]:
    """The packed cache of the dataset and the data module drawing batches from it."""
    from pvdetect.data.layouts import find_chips
    from pvdetect.data.module import PVDataModule
    from pvdetect.data.packed import build_cache

    d = cfg.data
    records = find_chips(
        Path(d.root),  # type: ignore[arg-type]
        seed=cfg.seed,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
    )
    cache = build_cache(records, d.cache_dir, d.band_order)
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
        source=d.root,
    )
    return cache, dm


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

    try:
        trainer = build_trainer(cfg, paths.run_dir, precision)
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
    if not config.data.root:
        raise ConfigError("data.root: no dataset given")
    if not config.out:
        raise ConfigError("out: no run folder given")
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
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    _, channels, height, width = cache.images.shape
    if _on_gpu(cfg):
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 parts
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = SegmentationTask(
        cfg, cache.stats, in_channels=channels, chip_size=(height, width), pretrained=not cfg.resume
    )
    if cfg.resume:
        check_resume_checkpoint(paths.last, task)
    new_run = not paths.run_dir.exists()
    _start_run_dir(cfg, paths)
    try:
        trainer, source = _fit(cfg, task, dm, paths, precision)
    except BaseException:
        # a start-up failure leaves no run folder holding just config.yaml behind
        if new_run and env_rank_zero() and not paths.last.exists():
            shutil.rmtree(paths.run_dir, ignore_errors=True)
        raise
    threshold, val_metrics = calibrate(task, cfg.threshold_metric)
    if trainer.is_global_zero:
        meta = bundle_meta(cfg, cache, threshold, {**val_metrics, "checkpoint": source.name})
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
    cfg: TrainConfig, cache: PackedCache, threshold: float, val_metrics: dict[str, Any]
) -> BundleMeta:
    """The bundle metadata of a finished run: what predict and evaluate need to know."""
    from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA
    from pvdetect.model.bundle import BundleMeta, UpscaleMeta

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
    )


def _bundle_nodata(cache: PackedCache, default: float) -> float:
    """The chips' image nodata value when finite, else the default."""
    value = cache.chips[0].get("nodata", default) if cache.chips else default
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default

"""Training configuration: typed dataclasses, YAML load/dump, merging and validation.

A configuration is resolved in three layers: the dataclass defaults, then a YAML file (nested
sections ``data``, ``model``, ``loss``, ``optim``, ``upscale`` plus top-level keys), then the
command-line options that were actually given. Every problem (unknown key, wrong type, value out
of range) raises :class:`~pvdetect.errors.ConfigError` naming the dotted key and the value.

Example YAML::

    data:
      root: /data/pv
      batch_size: 8
      drop_empty: 0.5
    model: {arch: unet, encoder: resnet34, weights: imagenet}
    loss: {name: bce_focal_jaccard, params: {pos_weight: 3.0}}
    optim: {optimizer: adamw, lr: 0.0005}
    upscale: {factor: 2, method: bicubic}
    epochs: 60
    out: runs/unet34
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from pvdetect.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("auto", "bf16-mixed", "16-mixed", "32", "32-true", "bf16-true", "16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
UPSCALE_FACTORS = (1, 2, 4)
UPSCALE_METHODS = ("bicubic", "sr")
THRESHOLD_METRICS = ("f1", "iou")
MONITORS = ("val_loss", "val_iou")
SCHEDULES = ("plateau", "cosine")


@dataclass
class DataConfig:
    """Where the chips are and how batches are drawn.

    Attributes:
        root: Dataset folder (any layout :func:`pvdetect.data.layouts.find_chips` knows) or a
            CSV manifest.
        cache_dir: Parent folder of the packed cache (default: ``ROOT/.pvdetect_cache``).
        band_order: 0-based source bands to use as Red, Green, Blue, NIR (default: as stored).
        val_fraction: Validation share when the layout defines no split.
        test_fraction: Test share when the layout defines no split.
        batch_size: Training batch size (per device).
        val_batch_size: Validation batch size (per device).
        test_batch_size: Test batch size (per device).
        num_workers: DataLoader worker processes (0: load in the main process).
        drop_empty: Probability of dropping a chip without PV from an epoch (resampled every
            epoch); 0 keeps all, 1 drops all.
        oversample_pv: Extra sampling weight of chips holding PV: such a chip is drawn
            ``1 + oversample_pv`` times as often as a chip without PV (0: plain shuffling).
        crop_size: Side of the random training crops at model resolution (after upscaling);
            default: the whole (upscaled) chip.
        crop_pv: Probability that a training crop of a chip holding PV is placed around one
            of its PV pixels (else anywhere); with small crops this keeps plants in view.
        augment: Random flips and 90-degree rotations (D4) of training batches.
    """

    root: str | None = None
    cache_dir: str | None = None
    band_order: list[int] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    batch_size: int = 5
    val_batch_size: int = 5
    test_batch_size: int = 40
    num_workers: int = 2
    drop_empty: float = 0.0
    oversample_pv: float = 0.0
    crop_size: int | None = None
    crop_pv: float = 0.0
    augment: bool = True


@dataclass
class ModelConfig:
    """Network choice.

    Attributes:
        arch: smp architecture (``unet``, ``unetplusplus``, ``deeplabv3plus``, ...).
        encoder: smp encoder or ``tu-<timm model>``.
        weights: ``imagenet`` (or another pretrained name), a local weights file, or None /
            ``none`` for random initialisation.
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    weights: str | None = "imagenet"


@dataclass
class LossSection:
    """Loss name and keyword parameters for :func:`pvdetect.model.losses.build_loss`."""

    name: str = "bce_focal_jaccard"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: ``adam`` or ``adamw``.
        lr: Initial learning rate (``plateau``) or peak learning rate (``cosine``).
        schedule: ``plateau``: ReduceLROnPlateau on the validation loss, stepped after each
            validation; ``cosine``: linear warm-up over ``warmup`` of the optimiser steps, then
            a cosine decay to ``min_lr`` at the last step of ``epochs`` (the schedule for a fixed
            budget: it needs no validation and reaches a low rate by the end; ``--resume`` with
            a larger ``epochs`` continues on the curve stretched to the new end).
        warmup: Fraction of the optimiser steps spent warming up (``cosine``).
        weight_decay: Weight decay (decoupled for AdamW, L2 for Adam).
        plateau_factor: Factor applied to the learning rate on a plateau.
        plateau_patience: Epochs without validation-loss improvement before reducing.
        min_lr: Lower bound of the learning rate.
        gradient_clip: Clip the gradient norm to this value (None: no clipping).
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    schedule: str = "plateau"
    warmup: float = 0.05
    weight_decay: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    min_lr: float = 1e-7
    gradient_clip: float | None = None


@dataclass
class UpscaleConfig:
    """Upscaling of the input before the network (factor 1: none).

    Attributes:
        factor: 1, 2 or 4.
        method: ``bicubic`` or ``sr`` (a super-resolution network, see ``sr_weights``).
        sr_weights: Weights file of the super-resolution model (method ``sr``).
    """

    factor: int = 1
    method: str = "bicubic"
    sr_weights: str | None = None


@dataclass
class TrainConfig:
    """Everything ``pvdetect train`` needs; see the module docstring for the YAML form.

    Attributes:
        out: Run folder.
        epochs: Maximum number of epochs.
        accumulate: Gradient accumulation (batches per optimiser step).
        precision: ``auto`` (bf16-mixed on CPU and bf16-capable GPUs, else 16-mixed),
            ``bf16-mixed``, ``16-mixed`` or ``32``.
        compile: ``torch.compile`` the network.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: Lightning ``devices`` (``auto``, a count or a list of device ids).
        num_nodes: Number of nodes.
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        seed: Seed of initialisation, data order and augmentation.
        resume: Continue the run in ``out`` from ``checkpoints/last.ckpt``.
        tensorboard: Write TensorBoard logs to ``out/logs``.
        max_minutes: Stop training after this many minutes (the best checkpoint so far is
            used for the bundle); None for no time limit.
        val_every: Validate every N epochs (and at the last epoch); early-stopping patience
            and the plateau schedule then count validation rounds.
        max_train_batches: Limit of training batches per epoch (debugging).
        max_val_batches: Limit of validation batches per epoch (debugging).
        threshold_metric: Score maximised by the calibrated threshold (``f1`` or ``iou``).
        monitor: Metric selecting ``best.ckpt`` (``val_loss`` or ``val_iou``).
        patience: Early-stopping patience in epochs (on the validation loss).
        min_delta: Smallest validation-loss change that counts as an improvement.
        overlap: Tile overlap written to the bundle (default: a quarter of the tile size).
        progress: Show the progress bar.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)
    out: str | None = None
    epochs: int = 100
    accumulate: int = 1
    precision: str = "auto"
    compile: bool = False
    accelerator: str = "auto"
    devices: int | list[int] | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    resume: bool = False
    tensorboard: bool = False
    max_minutes: float | None = None
    val_every: int = 1
    max_train_batches: int | None = None
    max_val_batches: int | None = None
    threshold_metric: str = "f1"
    monitor: str = "val_loss"
    patience: int = 20
    min_delta: float = 1e-4
    overlap: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (
            type(None) in options and isinstance(value, str) and value.lower() in ("none", "null")
        ):
            if type(None) in options:
                return None
        if isinstance(value, str) and int in options and value.strip().lstrip("-").isdigit():
            return int(value)
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, key)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of options, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())  # YAML reads 1e-3 as a string
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        else:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported option type {tp!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown option {prefix}{key}{hint}; valid options here: {', '.join(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any] | None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping (missing keys: defaults).

    Raises:
        ConfigError: unknown key, wrong type or invalid value (named by its dotted key).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration must be a mapping of options, got {type(data).__name__}")
    cfg = _build(TrainConfig, data)
    validate(cfg)
    return cfg


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested copy of ``base`` with dotted-key ``overrides`` (``{"data.batch_size": 8}``) set."""
    out = _deep_copy(base)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML configuration file into a nested dict (empty file: ``{}``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}"
        raise ConfigError(f"{p}: invalid YAML{where} ({first[0] if first else exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a configuration must be a mapping of options")
    return data


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- dotted ``overrides``; errors name the file."""
    data = merge(read_yaml(path), overrides or {})
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_config(config: TrainConfig) -> str:
    """YAML text of a configuration (sections in declaration order)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the configuration as YAML, atomically."""
    from pvdetect.data.raster import atomic_output

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(p) as tmp:
        Path(tmp).write_text(dump_config(config), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- validation


def _bad(key: str, value: Any, want: str) -> ConfigError:
    return ConfigError(f"{key}: {want}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Check ranges and choices; raises ConfigError naming the dotted key and value."""
    d, m, o, u = cfg.data, cfg.model, cfg.optim, cfg.upscale
    for key, value in (
        ("data.batch_size", d.batch_size),
        ("data.val_batch_size", d.val_batch_size),
        ("data.test_batch_size", d.test_batch_size),
        ("epochs", cfg.epochs),
        ("accumulate", cfg.accumulate),
        ("num_nodes", cfg.num_nodes),
        ("patience", cfg.patience),
        ("val_every", cfg.val_every),
    ):
        if value < 1:
            raise _bad(key, value, "must be >= 1")
    for key, value in (
        ("max_train_batches", cfg.max_train_batches),
        ("max_val_batches", cfg.max_val_batches),
        ("data.crop_size", d.crop_size),
    ):
        if value is not None and value < 1:
            raise _bad(key, value, "must be >= 1")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise _bad("max_minutes", cfg.max_minutes, "must be > 0")
    if d.num_workers < 0:
        raise _bad("data.num_workers", d.num_workers, "must be >= 0")
    if not 0.0 <= d.drop_empty <= 1.0:
        raise _bad("data.drop_empty", d.drop_empty, "must be a probability in [0, 1]")
    if not 0.0 <= d.crop_pv <= 1.0:
        raise _bad("data.crop_pv", d.crop_pv, "must be a probability in [0, 1]")
    if d.oversample_pv < 0:
        raise _bad("data.oversample_pv", d.oversample_pv, "must be >= 0")
    for key, value in (
        ("data.val_fraction", d.val_fraction),
        ("data.test_fraction", d.test_fraction),
    ):
        if not 0.0 <= value < 1.0:
            raise _bad(key, value, "must be in [0, 1)")
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction must be < 1, got "
            f"{d.val_fraction} + {d.test_fraction}"
        )
    if d.band_order is not None and (not d.band_order or min(d.band_order) < 0):
        raise _bad("data.band_order", d.band_order, "must be non-negative 0-based band indices")
    if not m.arch.strip():
        raise _bad("model.arch", m.arch, "must not be empty")
    if not m.encoder.strip():
        raise _bad("model.encoder", m.encoder, "must not be empty")
    if m.weights is not None and m.weights.strip().lower() in ("", "none", "null"):
        m.weights = None
    if not cfg.loss.name.strip():
        raise _bad("loss.name", cfg.loss.name, "must not be empty")
    o.optimizer = o.optimizer.lower()
    if o.optimizer not in OPTIMIZERS:
        raise _bad("optim.optimizer", o.optimizer, f"must be one of {', '.join(OPTIMIZERS)}")
    if o.lr <= 0:
        raise _bad("optim.lr", o.lr, "must be > 0")
    o.schedule = o.schedule.lower()
    if o.schedule not in SCHEDULES:
        raise _bad("optim.schedule", o.schedule, f"must be one of {', '.join(SCHEDULES)}")
    if not 0.0 <= o.warmup < 1.0:
        raise _bad("optim.warmup", o.warmup, "must be in [0, 1)")
    if o.weight_decay < 0:
        raise _bad("optim.weight_decay", o.weight_decay, "must be >= 0")
    if not 0.0 < o.plateau_factor < 1.0:
        raise _bad("optim.plateau_factor", o.plateau_factor, "must be in (0, 1)")
    if o.plateau_patience < 0:
        raise _bad("optim.plateau_patience", o.plateau_patience, "must be >= 0")
    if o.min_lr < 0:
        raise _bad("optim.min_lr", o.min_lr, "must be >= 0")
    if o.gradient_clip is not None and o.gradient_clip <= 0:
        raise _bad("optim.gradient_clip", o.gradient_clip, "must be > 0")
    if u.factor not in UPSCALE_FACTORS:
        raise _bad("upscale.factor", u.factor, "must be 1, 2 or 4")
    u.method = u.method.lower()
    if u.method not in UPSCALE_METHODS:
        raise _bad("upscale.method", u.method, f"must be one of {', '.join(UPSCALE_METHODS)}")
    if u.method == "sr" and u.factor > 1 and not u.sr_weights:
        raise ConfigError("upscale.sr_weights: the 'sr' method needs a weights file (--sr-weights)")
    if d.crop_size is not None and d.crop_size % u.factor:
        raise ConfigError(
            f"data.crop_size: must be a multiple of upscale.factor {u.factor}, got {d.crop_size}"
        )
    cfg.precision = str(cfg.precision).lower()
    if cfg.precision not in PRECISIONS:
        raise _bad("precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    cfg.accelerator = cfg.accelerator.lower()
    if cfg.accelerator not in ACCELERATORS:
        raise _bad("accelerator", cfg.accelerator, f"must be one of {', '.join(ACCELERATORS)}")
    if isinstance(cfg.devices, int) and cfg.devices < 1 and cfg.devices != -1:
        raise _bad("devices", cfg.devices, "must be >= 1, -1 (all), a list of ids or 'auto'")
    if isinstance(cfg.devices, list) and (not cfg.devices or min(cfg.devices) < 0):
        raise _bad("devices", cfg.devices, "must list non-negative device ids")
    if cfg.threshold_metric not in THRESHOLD_METRICS:
        raise _bad("threshold_metric", cfg.threshold_metric, "must be f1 or iou")
    if cfg.monitor not in MONITORS:
        raise _bad("monitor", cfg.monitor, f"must be one of {', '.join(MONITORS)}")
    if cfg.min_delta < 0:
        raise _bad("min_delta", cfg.min_delta, "must be >= 0")
    if cfg.overlap is not None and cfg.overlap < 0:
        raise _bad("overlap", cfg.overlap, "must be >= 0")

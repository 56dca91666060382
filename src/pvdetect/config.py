"""Training configuration: pydantic models, YAML load/dump, merging and validation.

A configuration is resolved in three layers: the model defaults, then a YAML file (nested
sections ``data``, ``model``, ``loss``, ``optim``, ``upscale`` plus top-level keys), then the
command-line options that were actually given. The models are the one table of options: each
field carries its default, its range, its documentation (``description``) and, for options with
a command-line flag, the flag and its argparse extras (``json_schema_extra``, read by
:mod:`pvdetect.commands.train`). Every problem (unknown key, wrong type, value out of range)
raises a one-line :class:`~pvdetect.errors.ConfigError` naming the dotted key and the value.
``docs/train-config.example.yaml`` shows every option.

Why this long: the module is over 500 lines because it holds that table: every training option
with its documentation, in one place (the messages of validation errors live in
:mod:`pvdetect.validation`, the command-line parser in :mod:`pvdetect.commands.train`).

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

import os
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from pvdetect.errors import ConfigError
from pvdetect.validation import first_error, leaf_fields, rule_error

Optimizer = Literal["adam", "adamw"]
Precision = Literal["auto", "bf16-mixed", "16-mixed", "32", "32-true", "bf16-true", "16-true"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
UpscaleFactor = Literal[1, 2, 4]
UpscaleMethod = Literal["bicubic", "sr"]
ThresholdMetric = Literal["f1", "iou"]
Monitor = Literal["val_loss", "val_iou"]
Schedule = Literal["plateau", "cosine"]
SyntheticStyle = Literal["brazil", "temperate", "mixed"]

OPTIMIZERS = typing.get_args(Optimizer)
PRECISIONS = typing.get_args(Precision)
ACCELERATORS = typing.get_args(Accelerator)
UPSCALE_FACTORS = typing.get_args(UpscaleFactor)
UPSCALE_METHODS = typing.get_args(UpscaleMethod)
THRESHOLD_METRICS = typing.get_args(ThresholdMetric)
MONITORS = typing.get_args(Monitor)
SCHEDULES = typing.get_args(Schedule)
SYNTHETIC_STYLES = typing.get_args(SyntheticStyle)

#: the smallest training crop accepted whatever the model (see :func:`check_model_sizes`)
MIN_CROP = 16


_ARGPARSE_EXTRAS = ("metavar", "action", "const", "default_text", "as_text")
#: a source name: what metrics.csv columns (``val_iou@NAME``) and reports call a dataset
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def option(default: Any, description: str, flag: str | None = None, **kwargs: Any) -> Any:
    """A configuration field: default, documentation, range and command-line flag.

    Args:
        default: The default value (``...`` with ``default_factory``).
        description: The documentation of the option (also its ``--help`` text).
        flag: The command-line option string, e.g. ``--batch-size`` (None: YAML only).
        **kwargs: ``Field`` constraints (``ge``, ``gt``, ``le``, ``lt``, ``min_length``,
            ``default_factory``) and the flag's argparse extras, stored in
            ``json_schema_extra`` with the flag: ``metavar``; ``action`` (``store_const`` with
            ``const``, ``boolean_optional`` for a ``--x/--no-x`` pair, or ``append`` for a
            repeatable option); ``default_text`` (how the help shows a None default);
            ``as_text`` (the flag's value reaches the field as text, e.g. ``N:WEIGHT``).
    """
    extras = {k: kwargs.pop(k) for k in _ARGPARSE_EXTRAS if k in kwargs}
    schema = {"flag": flag, **extras} if flag else None
    if default is not ...:
        kwargs["default"] = default
    return Field(description=description, json_schema_extra=schema, **kwargs)


def _allows(annotation: Any, tp: type) -> bool:
    """True if ``annotation`` (possibly a union or Optional) admits ``tp``."""
    if annotation is tp:
        return True
    return any(_allows(a, tp) for a in typing.get_args(annotation) if not isinstance(a, str | int))


def _numeric(annotation: Any) -> bool:
    """True for number fields (which pydantic would let take a bool as 0 or 1)."""
    if _allows(annotation, bool):
        return False
    ints = typing.get_origin(annotation) is Literal and all(
        isinstance(a, int) for a in typing.get_args(annotation)
    )
    return ints or _allows(annotation, int) or _allows(annotation, float)


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class _Options(BaseModel):
    """Base of the configuration sections: unknown keys refused, finite numbers only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        """YAML and command-line spellings: paths as text, ``none``/``null`` for None, and no
        booleans where numbers belong."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, value in data.items():
            info = cls.model_fields.get(name)
            if info is None:
                continue
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if (
                isinstance(value, str)
                and value.strip().lower() in ("none", "null")
                and _allows(info.annotation, type(None))
            ):
                value = None
            if isinstance(value, bool) and _numeric(info.annotation):
                want = "a number" if _allows(info.annotation, float) else "an integer"
                raise rule_error(f"{{0}}: expected {want}, got {value!r}", name)
            out[name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON ready)."""
        return self.model_dump()


def _root_weight(text: str) -> dict[str, Any]:
    """``ROOT[:WEIGHT]`` as ``{"root": ROOT, "weight": WEIGHT}`` (a tail that is no number stays
    part of the path)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return {"root": head, "weight": float(tail)}
        except ValueError:
            pass
    return {"root": text}


def _check_name(value: str | None) -> str | None:
    if value is not None and not SOURCE_NAME.fullmatch(value):
        raise PydanticCustomError(
            "source_name", "must be letters, digits and _ . + - (starting with a letter or digit)"
        )
    return value


class SourceConfig(_Options):
    """One dataset of ``data.sources`` (on the command line ``--data ROOT[:WEIGHT]``).

    Unset options (None) take the value of the ``data`` section.
    """

    root: str = option(..., "Dataset folder (any layout find_chips knows) or a CSV manifest.")
    name: str | None = option(
        None, "Name of the dataset in metrics.csv columns (val_iou@NAME), the bundle and "
        "reports (letters, digits, _ . + -).", default_text="the folder name",
    )  # fmt: skip
    weight: float = option(
        1.0, "Sampling weight: the expected share of each epoch's draws from this dataset is "
        "weight / (sum of all weights).", gt=0.0,
    )  # fmt: skip
    val_fraction: float | None = option(
        None, "Validation share when its layout defines no split.", ge=0.0, lt=1.0
    )
    test_fraction: float | None = option(
        None, "Test share when its layout defines no split.", ge=0.0, lt=1.0
    )
    band_order: list[Annotated[int, Field(ge=0)]] | None = option(
        None, "0-based source bands used as Red, Green, Blue, NIR.", min_length=1
    )
    drop_empty: float | None = option(
        None, "data.drop_empty for the chips of this dataset.", ge=0.0, le=1.0
    )
    oversample_pv: float | None = option(
        None, "data.oversample_pv for the chips of this dataset.", ge=0.0
    )
    exclude: str | list[str] | None = option(
        None, "Chips of this dataset to leave out, as data.exclude (its own list: "
        "data.exclude is for data.root).",
    )  # fmt: skip

    _name = field_validator("name")(_check_name)

    @field_validator("band_order", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _fractions(self) -> SourceConfig:
        val, test = self.val_fraction or 0.0, self.test_fraction or 0.0
        if val + test >= 1.0:
            raise rule_error(
                f"{{0}} + {{1}} must be < 1, got {val} + {test}", "val_fraction", "test_fraction"
            )
        return self


class SyntheticConfig(_Options):
    """Synthetic chips of pvdetect.synth as a training source, packed once (no files written).

    The chips are those ``pvdetect synth OUT --chips N --seed SEED --chip-size SIZE`` writes
    (style ``mixed``; for ``brazil`` or ``temperate`` the sites of the other region are skipped),
    with that command's train/val/test split by site.
    """

    chips: int = option(
        0, "Synthetic chips to generate (0: none); on the command line N[:WEIGHT].",
        "--synthetic", metavar="N[:WEIGHT]", ge=0, as_text=True,
    )  # fmt: skip
    weight: float = option(
        1.0, "Sampling weight of the synthetic chips (see data.sources).", gt=0.0
    )
    style: SyntheticStyle = option(
        "mixed", "Landscapes: brazil (dry season), temperate, or mixed (both, as pvdetect "
        "synth writes).", "--synthetic-style",
    )  # fmt: skip
    chip_size: int | None = option(
        None, "Side of the synthetic chips in px.", "--synthetic-chip-size", metavar="PX",
        default_text="the largest real chip, else 256", ge=32,
    )  # fmt: skip
    seed: int = option(0, "Seed of the generator (as pvdetect synth --seed).", "--synthetic-seed",
                       ge=0)  # fmt: skip
    off_last: int = option(
        0, "The last N epochs draw the real datasets alone (a final phase on the labelled data, "
        "at the end of the schedule; the band statistics stay those of the whole mix); 0: "
        "synthetic chips in every epoch.", "--synthetic-off-last", metavar="N", ge=0,
    )  # fmt: skip
    name: str | None = option(
        None, "Name of the synthetic source in metrics and reports.",
        default_text="synthetic-STYLE",
    )  # fmt: skip

    _lower_style = field_validator("style", mode="before")(_lower)
    _name = field_validator("name")(_check_name)

    @model_validator(mode="before")
    @classmethod
    def _chips_weight(cls, data: Any) -> Any:
        """``chips: "N:WEIGHT"`` (the command-line form) sets both."""
        if isinstance(data, Mapping) and isinstance(data.get("chips"), str):
            text = data["chips"].strip()
            head, sep, tail = text.partition(":")
            out = dict(data)
            out["chips"] = head.strip()
            if sep:
                out["weight"] = tail.strip()
            return out
        return data


class DataConfig(_Options):
    """Where the chips are and how batches are drawn."""

    root: str | None = option(
        None,
        "Dataset folder (any layout pvdetect.data.layouts.find_chips knows) or a CSV manifest; "
        "on the command line the DATA argument. Trained on as the first source, weight 1.",
    )
    sources: list[SourceConfig] = option(
        ..., "Further datasets trained on together, each {root, weight, name, val_fraction, "
        "test_fraction, band_order, drop_empty, oversample_pv, exclude}; on the command line "
        "--data ROOT[:WEIGHT], repeatable (the flags replace the YAML list). An epoch has as many "
        "draws as the training chips of all sources hold (after drop_empty); each draw picks a "
        "source with probability weight / (sum of weights), then the next chip of that "
        "source's own shuffled order (a fresh permutation each time it runs out, or weighted "
        "draws with its oversample_pv).", "--data", metavar="ROOT[:WEIGHT]", action="append",
        default_factory=list,
    )  # fmt: skip
    synthetic: SyntheticConfig = option(
        ..., "Synthetic training chips.", default_factory=SyntheticConfig
    )
    cache_dir: str | None = option(
        None, "Parent folder of the packed cache.", "--cache-dir", metavar="DIR",
        default_text="ROOT/.pvdetect_cache",
    )  # fmt: skip
    band_order: list[Annotated[int, Field(ge=0)]] | None = option(
        None, "0-based source bands used as Red, Green, Blue, NIR (a list, or comma separated).",
        "--band-order", metavar="I,J,K,L", default_text="as stored", min_length=1,
    )  # fmt: skip
    bands: str | None = option(
        None, "The chips' bands used as Red, Green, Blue, NIR, by name or 1-based index "
        "(B04,B03,B02,B08 or 3,2,1,7), as predict --bands; wins over band_order.",
        "--bands", metavar="B,B,B,B", default_text="by the chips' band names, else as stored",
    )  # fmt: skip
    val_fraction: float = option(
        0.15, "Validation share of the chips when the layout defines no split.",
        "--val-fraction", ge=0.0, lt=1.0,
    )  # fmt: skip
    test_fraction: float = option(
        0.15, "Test share of the chips when the layout defines no split.",
        "--test-fraction", ge=0.0, lt=1.0,
    )  # fmt: skip
    batch_size: int = option(5, "Training batch size (per device).", "--batch-size", ge=1)
    val_batch_size: int = option(5, "Validation batch size (per device).", "--val-batch-size", ge=1)
    test_batch_size: int = option(40, "Test batch size (per device).", "--test-batch-size", ge=1)
    num_workers: int = option(
        2, "DataLoader worker processes (0: load in the main process).", "--num-workers", ge=0
    )
    drop_empty: float = option(
        0.0, "Probability of dropping a chip without PV from an epoch (resampled every epoch); "
        "0 keeps all, 1 drops all.", "--drop-empty", metavar="P", ge=0.0, le=1.0,
    )  # fmt: skip
    oversample_pv: float = option(
        0.0, "Extra sampling weight of chips holding PV: such a chip is drawn 1+W times as often "
        "as a chip without PV (0: plain shuffling).", "--oversample-pv", metavar="W", ge=0.0,
    )  # fmt: skip
    crop_size: int | None = option(
        None, "Side of the random training crops at model resolution (after upscaling); a "
        "multiple of upscale.factor, at least the model's smallest input.", "--crop-size",
        metavar="PX", default_text="the whole chip", ge=1,
    )  # fmt: skip
    crop_pv: float = option(
        0.0, "Probability that a training crop of a chip holding PV is placed around one of its "
        "PV pixels (else anywhere); with small crops this keeps plants in view.", "--crop-pv",
        metavar="P", ge=0.0, le=1.0,
    )  # fmt: skip
    augment: bool = option(
        True, "Random flips and 90-degree rotations (D4) of training batches (--no-augment: "
        "none).", "--no-augment", action="store_const", const=False,
    )  # fmt: skip
    mirror_windows: bool = option(
        False, "For chip sets cut to their labels (a window of valid pixels around each plant, "
        "nodata around it, whose shape tells where the plant is): mirror each chip's window "
        "outward over the whole chip, image and label alike, in training and validation. Chips "
        "whose valid pixels are not one rectangle smaller than the chip stay as they are.",
        "--mirror-windows", action="store_const", const=True,
    )  # fmt: skip
    exclude: str | list[str] | None = option(
        None, "Chips of data.root to leave out of every split, the statistics and the folds "
        "(labels that do not describe their image, e.g. dates before a plant was built): a "
        "file with one entry per line (# comments) or a list; an entry is a chip's image or "
        "mask path relative to the dataset folder, its key, or a shell pattern of them, and "
        "must name at least one chip.", "--exclude", metavar="FILE",
    )  # fmt: skip

    @field_validator("band_order", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _source_texts(cls, value: Any) -> Any:
        """``ROOT[:WEIGHT]`` texts (the command-line form) and a single entry as a list."""
        if isinstance(value, str | Mapping):
            value = [value]
        if isinstance(value, list | tuple):
            return [_root_weight(v) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise rule_error(
                f"{{0}} + {{1}} must be < 1, got {self.val_fraction} + {self.test_fraction}",
                "val_fraction",
                "test_fraction",
            )
        return self

    @model_validator(mode="after")
    def _distinct_sources(self) -> DataConfig:
        roots = [self.root] if self.root else []
        roots += [s.root for s in self.sources]
        seen = set()
        for i, root in enumerate(roots):
            key = os.path.normpath(os.path.expanduser(root))
            if key in seen:
                where = f"sources[{i - 1 if self.root else i}].root"
                raise rule_error(f"{{0}}: dataset {root} is given twice", where)
            seen.add(key)
        names = [s.name for s in self.sources if s.name] + (
            [self.synthetic.name] if self.synthetic.name else []
        )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise rule_error(f"{{0}}: name {dup[0]} is given twice", "sources")
        return self

    def has_data(self) -> bool:
        """True when a dataset or synthetic chips are configured."""
        return bool(self.root or self.sources or self.synthetic.chips)


class ModelConfig(_Options):
    """Network choice."""

    arch: str = option(
        "unet", "segmentation_models_pytorch architecture (unet, unetplusplus, deeplabv3plus, "
        "...).", "--arch",
    )  # fmt: skip
    encoder: str = option("resnet18", "smp encoder, or a timm model as tu-NAME.", "--encoder")
    weights: str | None = option(
        "imagenet", "Pretrained encoder weights: imagenet (or another pretrained name), a local "
        "weights file, or none for random initialisation.", "--weights",
        metavar="imagenet|PATH|none",
    )  # fmt: skip
    init_from: str | None = option(
        None, "Fine-tune a trained pvdetect bundle (folder, .pvb or run folder): the run starts "
        "from its weights and band normalisation (weights is then unused; arch and encoder "
        "must be the bundle's, and are taken from it when not given). With cv, a "
        "cross-validation run dealt the same folds: fold k starts from RUN/fold-k/bundle.",
        "--init-from", metavar="BUNDLE|RUN",
    )  # fmt: skip
    blend: float | None = option(
        None, "With init_from, the bundle holds start + blend x (trained - start) for every "
        "weight (a weight-space ensemble of the start and its fine-tuned copy, WiSE-FT), "
        "validated and calibrated as such; 0 keeps the start, 1 the trained weights.",
        "--blend", ge=0.0, le=1.0, default_text="1 (the trained weights)",
    )  # fmt: skip

    @field_validator("arch", "encoder")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("string_too_short", "must not be empty")
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _no_weights(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value


class LossSection(_Options):
    """Loss name and keyword parameters for pvdetect.model.losses.build_loss."""

    name: str = option(
        "bce_focal_jaccard", "Loss function (see pvdetect.model.losses).", "--loss", min_length=1
    )
    params: dict[str, Any] = option(
        ..., "Keyword parameters of the loss, e.g. pos_weight: 3.0.", default_factory=dict
    )


class OptimConfig(_Options):
    """Optimiser and learning-rate schedule."""

    optimizer: Optimizer = option(
        "adamw", "Optimiser: adam, or adamw (Adam with decoupled weight decay).", "--optimizer"
    )
    lr: float = option(
        1e-3, "Initial learning rate (plateau) or peak learning rate (cosine).", "--lr", gt=0.0
    )
    schedule: Schedule = option(
        "plateau", "plateau: ReduceLROnPlateau on the validation loss, stepped after each "
        "validation; cosine: linear warm-up over the warmup share of the optimiser steps, then "
        "a cosine decay to min_lr at the last step of epochs (needs no validation; --resume "
        "with a larger epochs continues on the curve stretched to the new end).", "--schedule",
    )  # fmt: skip
    warmup: float = option(
        0.05, "Share of the optimiser steps spent warming up (cosine).", "--warmup",
        metavar="FRAC", ge=0.0, lt=1.0,
    )  # fmt: skip
    weight_decay: float = option(
        1e-4, "Weight decay (decoupled for AdamW, L2 for Adam).", "--weight-decay", ge=0.0
    )
    plateau_factor: float = option(
        0.5, "Factor applied to the learning rate on a plateau.", gt=0.0, lt=1.0
    )
    plateau_patience: int = option(
        5, "Validations without loss improvement before the rate is reduced.", ge=0
    )
    min_lr: float = option(1e-7, "Lower bound of the learning rate.", ge=0.0)
    gradient_clip: float | None = option(
        None, "Clip the gradient norm to this value.", "--gradient-clip",
        default_text="no clipping", gt=0.0,
    )  # fmt: skip

    _lower_choices = field_validator("optimizer", "schedule", mode="before")(_lower)


class UpscaleConfig(_Options):
    """Upscaling of the input before the network (factor 1: none)."""

    factor: UpscaleFactor = option(
        1, "Upscale the inputs by this factor before the network.", "--upscale-factor"
    )
    method: UpscaleMethod = option(
        "bicubic", "bicubic, or sr: a super-resolution network (see sr_weights).",
        "--upscale-method",
    )  # fmt: skip
    sr_weights: str | None = option(
        None, "Weights file of the super-resolution model (method sr).", "--sr-weights",
        metavar="PATH",
    )  # fmt: skip

    _lower_method = field_validator("method", mode="before")(_lower)

    @field_validator("factor", mode="before")
    @classmethod
    def _int_factor(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @model_validator(mode="after")
    def _sr_needs_weights(self) -> UpscaleConfig:
        if self.method == "sr" and self.factor > 1 and not self.sr_weights:
            raise rule_error(
                "{0}: the 'sr' method needs a weights file (--sr-weights)", "sr_weights"
            )
        return self


class AugmentConfig(_Options):
    """Spectral augmentation of training batches (off by default; never at validation).

    Applied on the device to the raw reflectance (x 10000) of the training crops, before
    normalisation, to the valid pixels only, per sample: each band times a gain and the whole
    image times a brightness factor, plus a per-band offset, then haze (an added path
    reflectance, strongest in blue, with the matching loss of contrast); negative results are
    clipped to 0. Drawn from the seeded generator of the other augmentations.
    """

    spectral: bool = option(
        False, "Spectral augmentation on (--spectral-augment) or off.", "--spectral-augment",
        action="boolean_optional",
    )  # fmt: skip
    p: float = option(
        0.8, "Share of the training samples that are augmented.", "--augment-p", metavar="P",
        ge=0.0, le=1.0,
    )  # fmt: skip
    gain: float = option(
        0.08, "Per-band gain jitter: each band times U(1 - G, 1 + G).", "--augment-gain",
        metavar="G", ge=0.0, lt=1.0,
    )  # fmt: skip
    offset: float = option(
        100.0, "Per-band offset jitter in reflectance x 10000: each band plus U(-O, O).",
        "--augment-offset", metavar="O", ge=0.0,
    )  # fmt: skip
    brightness: float = option(
        0.15, "Brightness jitter: all bands times U(1 - B, 1 + B).", "--augment-brightness",
        metavar="B", ge=0.0, lt=1.0,
    )  # fmt: skip
    haze: float = option(
        300.0, "Haze up to H reflectance x 10000: h = U(0, H) is added times (Red 0.7, Green "
        "0.85, Blue 1.0, NIR 0.5) and the image is scaled by 1 - h / 10000.", "--augment-haze",
        metavar="H", ge=0.0, lt=10000.0,
    )  # fmt: skip


class TrainConfig(_Options):
    """Everything ``pvdetect train`` needs; see the module docstring for the YAML form."""

    data: DataConfig = option(..., "Chips and batches.", default_factory=DataConfig)
    model: ModelConfig = option(..., "The network.", default_factory=ModelConfig)
    loss: LossSection = option(..., "The training loss.", default_factory=LossSection)
    optim: OptimConfig = option(..., "Optimiser and schedule.", default_factory=OptimConfig)
    upscale: UpscaleConfig = option(
        ..., "Upscaling before the network.", default_factory=UpscaleConfig
    )
    augment: AugmentConfig = option(..., "Spectral augmentation.", default_factory=AugmentConfig)
    out: str | None = option(
        None, "Run folder (required: here or in the --config file).", "--out", metavar="RUN"
    )
    epochs: int = option(100, "Maximum number of epochs.", "--epochs", ge=1)
    accumulate: int = option(
        1, "Gradient accumulation over N batches per optimiser step.", "--accumulate",
        metavar="N", ge=1,
    )  # fmt: skip
    precision: Precision = option(
        "auto",
        "auto: bf16-mixed on bf16-capable GPUs and CPUs with native bf16, 16-mixed on older "
        "GPUs, 32-true on other CPUs.",
        "--precision",
    )
    compile: bool = option(
        False, "torch.compile the network.", "--compile", action="boolean_optional"
    )
    accelerator: Accelerator = option(
        "auto", "Lightning accelerator (gpu and cuda are the same).", "--accelerator"
    )
    devices: int | list[int] | str = option(
        "auto", "Lightning devices: auto, a count (-1: all) or device ids like 0,1.", "--devices"
    )
    num_nodes: int = option(1, "Number of nodes.", "--num-nodes", ge=1)
    strategy: str = option("auto", "Lightning strategy: auto, ddp, ...", "--strategy")
    seed: int = option(0, "Seed of initialisation, data order and augmentation.", "--seed")
    resume: bool = option(
        False, "Continue the run in RUN from checkpoints/last.ckpt (with its saved "
        "configuration; flags still override it).", "--resume", action="store_const", const=True,
    )  # fmt: skip
    tensorboard: bool = option(
        False, "Write TensorBoard logs to RUN/logs.", "--tensorboard", action="store_const",
        const=True,
    )  # fmt: skip
    max_minutes: float | None = option(
        None, "Stop training after this many minutes (the best checkpoint so far is used for "
        "the bundle).", "--max-minutes", metavar="MIN", default_text="no time limit", gt=0.0,
    )  # fmt: skip
    val_every: int = option(
        1, "Validate every N epochs (and at the last epoch); early-stopping patience and the "
        "plateau schedule then count validation rounds.", "--val-every", metavar="N", ge=1,
    )  # fmt: skip
    max_train_batches: int | None = option(
        None, "Limit of training batches per epoch (debugging).", "--max-train-batches",
        metavar="N", default_text="all", ge=1,
    )  # fmt: skip
    max_val_batches: int | None = option(
        None, "Limit of validation batches per epoch (debugging).", "--max-val-batches",
        metavar="N", default_text="all", ge=1,
    )  # fmt: skip
    threshold_metric: ThresholdMetric = option(
        "f1", "Score maximised by the calibrated threshold.", "--threshold-metric"
    )
    monitor: Monitor = option("val_loss", "Metric selecting best.ckpt.", "--monitor")
    patience: int = option(
        20, "Early-stopping patience in epochs (on the validation loss).", "--patience", ge=1
    )
    min_delta: float = option(
        1e-4, "Smallest validation-loss change that counts as an improvement.", ge=0.0
    )
    overlap: int | None = option(
        None, "Tile overlap written to the bundle, in input pixels.", "--overlap",
        default_text="a quarter of the tile", ge=0,
    )  # fmt: skip
    progress: bool = option(
        True, "Show the progress bar (--no-progress: hide it).", "--no-progress",
        action="store_const", const=False,
    )  # fmt: skip
    cv: int | None = option(
        None, "Site-grouped K-fold cross-validation: K runs in RUN/fold-1..K, the folds dealt "
        "by site over the training and validation chips of the real datasets (test chips and "
        "synthetic chips keep their split), and the spread of the validation metrics in "
        "RUN/cv.json and RUN/cv.csv; --resume finishes the missing folds.", "--cv",
        metavar="K", default_text="no cross-validation", ge=2,
    )  # fmt: skip
    cv_fold: int | None = option(
        None, "The fold (1..cv) this run trains: set in RUN/fold-N/config.yaml by --cv.", ge=1
    )

    _lower_choices = field_validator("precision", "accelerator", mode="before")(_lower)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"-?\d+", text):
                value = int(text)
            elif re.fullmatch(r"[\d\s,-]+", text):
                value = [v.strip() for v in text.split(",") if v.strip()]
            else:
                return text  # "auto" or a Lightning device spec
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1 and value != -1:
                raise PydanticCustomError(
                    "devices_count", "must be >= 1, -1 (all), a list of ids or 'auto'"
                )
            return value
        if isinstance(value, list | tuple):
            ids = [int(v) if isinstance(v, str) and re.fullmatch(r"-?\d+", v) else v for v in value]
            if not ids or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
                raise PydanticCustomError("devices_ids", "must list integer device ids")
            if min(ids) < 0:
                raise PydanticCustomError("devices_ids", "must list non-negative device ids")
            return ids
        raise PydanticCustomError(
            "devices_type", "expected auto, a device count or a list of device ids"
        )

    @model_validator(mode="after")
    def _blend_needs_start(self) -> TrainConfig:
        if self.model.blend is not None and not self.model.init_from:
            raise rule_error("{0}: needs {1} (the weights to blend with)", "model.blend",
                             "model.init_from")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _fold_in_range(self) -> TrainConfig:
        if self.cv_fold is not None and (self.cv is None or self.cv_fold > self.cv):
            raise rule_error(
                f"{{0}}: must be in [1, {{1}}], got {self.cv_fold} with {{1}} {self.cv}",
                "cv_fold",
                "cv",
            )
        return self

    @model_validator(mode="after")
    def _synthetic_phase(self) -> TrainConfig:
        off = self.data.synthetic.off_last
        if not off:
            return self
        if self.data.synthetic.chips == 0 or not (self.data.root or self.data.sources):
            raise rule_error(
                "{0}: needs a dataset and synthetic chips (the last epochs draw the datasets)",
                "data.synthetic.off_last",
            )
        if off >= self.epochs:
            raise rule_error(f"{{0}}: must be below {{1}} {self.epochs}, got {off}",
                             "data.synthetic.off_last", "epochs")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _crop_fits_factor(self) -> TrainConfig:
        crop, factor = self.data.crop_size, self.upscale.factor
        if crop is not None and crop % factor:
            raise rule_error(
                f"{{0}}: must be a multiple of upscale.factor {factor}, got {crop}",
                "data.crop_size",
            )
        return self


SECTIONS: dict[str, type[_Options]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossSection,
    "optim": OptimConfig,
    "upscale": UpscaleConfig,
    "augment": AugmentConfig,
}


def iter_fields(model: type[BaseModel] = TrainConfig) -> Iterator[tuple[str, FieldInfo]]:
    """Dotted key and field of every option (sections expanded, in declaration order)."""
    return leaf_fields(model)


# --------------------------------------------------------------------------- loading and saving


def config_from_dict(data: Mapping[str, Any] | None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping (missing keys: defaults).

    Raises:
        ConfigError: unknown key, wrong type or invalid value (named by its dotted key).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration must be a mapping of options, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(first_error(exc, TrainConfig)) from None


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
    from pvdetect.io import write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_text(p, dump_config(config))


def check_model_sizes(cfg: TrainConfig) -> None:
    """Refuse a training crop smaller than the model accepts (and any below 16 px).

    Builds nothing: asks :func:`pvdetect.model.factory.min_input_size`, which also refuses an
    unknown architecture or encoder. Call it before anything is written.

    Raises:
        ConfigError: unknown architecture or encoder, or ``data.crop_size`` too small.
    """
    from pvdetect.model.factory import min_input_size

    arch, encoder = cfg.model.arch, cfg.model.encoder
    need = max(min_input_size(arch, encoder), MIN_CROP)
    crop = cfg.data.crop_size
    if crop is not None and crop < need:
        raise ConfigError(
            f"data.crop_size: {crop} px is too small: {arch} with encoder {encoder} needs "
            f"crops of at least {need} px"
        )

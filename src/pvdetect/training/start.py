"""Fine-tuning from a trained bundle (``model.init_from``) and the weight-space blend
(``model.blend``).

A run with ``init_from`` starts from the bundle's weights and keeps its band normalisation
(mean and std: what those weights learned to read; p2/p98, used for display only, stay the
data's). The bundle's architecture, encoder and band count must be the run's. With ``cv``,
``init_from`` may name a cross-validation run: fold k starts from ``RUN/fold-k/bundle``, which
must have been dealt the same folds (same K and seed, the same datasets with the same chips per
split), so that no fold starts from a model trained on its own validation sites.

``blend`` (WiSE-FT, Wortsman et al. 2022): the bundle holds ``start + blend x (trained -
start)`` for every floating-point tensor (weights and BatchNorm statistics alike), validated and
calibrated as such. Between a model fitted to one region and its fine-tuned copy, the blend
trades what each knows with one number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvdetect.errors import BundleError, ConfigError

if TYPE_CHECKING:
    import lightning as L
    from torch import Tensor, nn

    from pvdetect.config import TrainConfig
    from pvdetect.data.module import PVDataModule
    from pvdetect.data.sources import SourceSet
    from pvdetect.data.stats import BandStats
    from pvdetect.model.bundle import BundleMeta
    from pvdetect.training.task import SegmentationTask

log = logging.getLogger("pvdetect.train")


@dataclass
class StartPoint:
    """What a fine-tuning run starts from."""

    path: Path
    meta: BundleMeta
    state: dict[str, Tensor]

    def stats(self, data: BandStats) -> BandStats:
        """The run's band statistics: the bundle's mean and std, the data's p2/p98."""
        from pvdetect.data.stats import BandStats

        s = self.meta.band_stats
        return BandStats(list(s["mean"]), list(s["std"]), list(data.p2), list(data.p98))


def _is_cv_run(path: Path) -> bool:
    return path.is_dir() and (path / "cv.json").is_file()


def start_path(init_from: str | Path, fold: int | None) -> Path:
    """The bundle a run (fold ``fold`` of a cross-validation, or None) starts from.

    ``init_from`` is a bundle (folder or ``.pvb``), a run folder (its ``bundle``) or, for a fold,
    a cross-validation run (its ``fold-k/bundle``).
    """
    path = Path(init_from)
    if _is_cv_run(path):
        if fold is None:
            raise ConfigError(
                f"{path}: a cross-validation run (one bundle per fold); give one of its bundles "
                "(RUN/fold-k/bundle) or train with --cv"
            )
        return path / f"fold-{fold}" / "bundle"
    if path.is_dir() and not (path / "bundle.json").is_file() and (path / "bundle").is_dir():
        return path / "bundle"
    return path


def open_start(cfg: TrainConfig, cache: SourceSet) -> StartPoint | None:
    """The checked starting point of ``cfg`` (None without ``model.init_from``); its band
    normalisation becomes ``cache.stats``.

    Raises:
        ConfigError: no usable bundle, another architecture, encoder or band count, or a
            cross-validation run dealt other folds.
    """
    from pvdetect.model.bundle import read_weights

    if not cfg.model.init_from:
        return None
    path = start_path(cfg.model.init_from, cfg.cv_fold)
    try:
        meta, state = read_weights(path)
    except BundleError as exc:
        raise ConfigError(f"model.init_from: {exc}") from None
    run_as = (cfg.model.arch, cfg.model.encoder, int(cache.images.shape[1]))
    made_as = (meta.arch, meta.encoder, int(meta.in_channels))
    if run_as != made_as:
        raise ConfigError(
            f"{path}: a {made_as[0]}/{made_as[1]} bundle of {made_as[2]} bands; this run is "
            f"{run_as[0]}/{run_as[1]} on {run_as[2]} bands (pass --arch and --encoder of the "
            "bundle)"
        )
    if cfg.cv_fold is not None:
        _check_folds(cfg, Path(cfg.model.init_from), meta, cache)
    if meta.upscale.factor != cfg.upscale.factor:
        log.warning(
            "%s was trained at upscale x%d; this run trains at x%d", path, meta.upscale.factor,
            cfg.upscale.factor,
        )  # fmt: skip
    log.info("starting from %s (%s/%s, its band statistics)", path, meta.arch, meta.encoder)
    start = StartPoint(path, meta, state)
    cache.stats = start.stats(cache.stats)  # the run normalises as the start's weights expect
    return start


def _check_folds(cfg: TrainConfig, given: Path, meta: BundleMeta, cache: SourceSet) -> None:
    """A fold's start must not have trained on the fold's validation sites."""
    if not _is_cv_run(given):
        log.warning(
            "%s is one bundle for every fold: its training chips may hold the validation sites "
            "of fold %s (pass the cross-validation run it came from)", given, cfg.cv_fold,
        )  # fmt: skip
        return
    from pvdetect.config import load_config

    theirs = load_config(given / "config.yaml")
    problem = None
    if (theirs.cv, theirs.seed) != (cfg.cv, cfg.seed):
        problem = f"cv {theirs.cv}, seed {theirs.seed} (this run: cv {cfg.cv}, seed {cfg.seed})"
    else:
        ours = {src.cache.fingerprint: _split_counts(cache, s)
                for s, src in enumerate(cache.sources) if src.kind == "dataset"}  # fmt: skip
        for src in meta.sources or []:
            theirs_counts = (src.chips.get("train", 0), src.chips.get("val", 0))
            if src.kind == "dataset" and ours.get(src.fingerprint) != theirs_counts:
                problem = f"dataset {src.name} is not split the same way"
                break
    if problem:
        raise ConfigError(
            f"{given}: its folds were dealt otherwise ({problem}); fold {cfg.cv_fold} could "
            "start from a model trained on its validation sites"
        )


def _split_counts(cache: SourceSet, s: int) -> tuple[int, int]:
    """Training and validation chips of source ``s`` (as ``bundle.json`` counts them)."""
    return int(cache.indices("train", s).size), int(cache.indices("val", s).size)


def calibrated(
    cfg: TrainConfig, task: SegmentationTask, trainer: L.Trainer, dm: PVDataModule,
    start: StartPoint | None,
) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """The threshold and validation metrics of the bundle's weights: the trained ones, or with
    ``model.blend`` their blend with the start's (validated again first)."""
    import warnings

    from pvdetect.training.calibration import calibrate

    weight = cfg.model.blend
    if start is not None and weight is not None and weight != 1.0:
        blend_into(task.model, start.state, weight)
        log.info("weights blended: start + %g x (trained - start)", weight)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.validate(task, datamodule=dm, verbose=False)
    threshold, val_metrics = calibrate(task, cfg.threshold_metric)
    if start is not None:
        val_metrics |= {"init_from": str(start.path), "blend": weight}
    return threshold, val_metrics


def blend_into(model: nn.Module, start: dict[str, Tensor], weight: float) -> None:
    """Set ``model``'s floating-point tensors to ``start + weight x (model - start)``."""
    import torch

    state = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if value.is_floating_point() and key in start:
                ref = start[key].to(device=value.device, dtype=torch.float64)
                value.copy_((ref + weight * (value.double() - ref)).to(value.dtype))

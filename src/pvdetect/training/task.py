"""The Lightning module that trains a PV segmentation network.

Everything between the raw batch and the network runs on the device, vectorised over the batch:

- training: random crop at the native resolution (``crop_size / factor`` px, so the cost per
  step does not grow with the upscale factor), random D4 flip/rotation, spectral jitter of the
  raw reflectance (``augment.spectral``, :mod:`pvdetect.model.spectral`), normalisation with the
  training-split band statistics, upscaling (bicubic or super-resolution), channels_last;
- validation: whole chips, normalised and upscaled the same way; metrics are computed at the
  upscaled resolution (``val_iou``, ``val_f1``) and, with the probabilities averaged back onto
  the native grid exactly as :meth:`pvdetect.model.bundle.Bundle.predict_probs` does, at the native
  resolution (``val_iou_native``, ``val_f1_native``).

With several sources (``sources``, ``source_of``), validation also keeps a loss and histograms
per source (logged as ``val_loss@NAME``, ``val_iou@NAME``, ``val_f1@NAME``), and ``val_loss``,
``val_iou`` ... and the calibration use the chips of the ``primary`` sources only (the real
datasets' validation chips when there are any).

Losses are summed on the device and pixel metrics go into
:class:`~pvdetect.evaluation.metrics.ThresholdHistogram` counts on the device; nothing is read
back to the host until the end of an epoch, where sums and histograms are reduced over DDP
ranks once. Random augmentation uses a generator seeded from ``(seed, epoch, batch, rank)``, so
a resumed run repeats exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from pvdetect.config import TrainConfig, config_from_dict
from pvdetect.evaluation.metrics import ThresholdHistogram
from pvdetect.model.factory import build_model, required_multiple
from pvdetect.model.losses import build_loss
from pvdetect.model.preprocessing import Preprocessor, run_model
from pvdetect.model.spectral import SpectralJitter, spectral_augment
from pvdetect.model.transforms import d4_augment, mirror_windows, random_crop, upscale_mask

__all__ = ["HIST_BINS", "SegmentationTask", "cosine_factor"]

#: calibrated thresholds are kept inside [THRESHOLD_MIN, 1 - THRESHOLD_MIN]
THRESHOLD_MIN = 0.01
#: bins of the probability histograms (threshold resolution 0.001)
HIST_BINS = 1000


def _plain(obj: Any) -> Any:
    """Dataclasses to dicts (checkpoints hold only plain types, for weights_only loading)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


class SegmentationTask(L.LightningModule):
    """Binary PV segmentation with on-device preprocessing and epoch-level metrics.

    Args:
        config: The training configuration (a :class:`~pvdetect.config.TrainConfig` or its
            dict form).
        band_stats: Training-split band statistics (``mean``, ``std``, ...), as
            :class:`~pvdetect.data.stats.BandStats` or dict.
        in_channels: Number of input bands.
        chip_size: ``(height, width)`` of the packed chips at the native resolution.
        pretrained: Load ``config.model.weights`` (False when the weights come from a
            checkpoint anyway).
        sources: Names of the chips' sources (several: per-source validation metrics).
        source_of: Source of each chip, by cache index (with ``sources``).
        primary: Per source: its validation chips count in ``val_*`` and the calibration
            (default: all).
    """

    def __init__(
        self,
        config: TrainConfig | dict[str, Any],
        band_stats: Any,
        in_channels: int = 4,
        chip_size: tuple[int, int] | list[int] = (64, 64),
        pretrained: bool = True,
        sources: Sequence[str] | None = None,
        source_of: Sequence[int] | np.ndarray | None = None,
        primary: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
        stats = _plain(band_stats)
        if hasattr(stats, "to_dict"):
            stats = stats.to_dict()
        self.save_hyperparameters(
            {
                "config": cfg.to_dict(),
                "band_stats": {k: [float(v) for v in stats[k]] for k in ("mean", "std")},
                "in_channels": int(in_channels),
                "chip_size": [int(chip_size[0]), int(chip_size[1])],
            }
        )
        self.cfg = cfg
        self.factor = int(cfg.upscale.factor)
        self.chip_size = (int(chip_size[0]), int(chip_size[1]))
        self.model = build_model(
            cfg.model.arch,
            cfg.model.encoder,
            in_channels=in_channels,
            weights=cfg.model.weights if pretrained else None,
        )
        self.loss_fn = build_loss(cfg.loss.name, **cfg.loss.params)
        self.multiple = required_multiple(cfg.model.arch, cfg.model.encoder)
        self.pre = Preprocessor(
            stats["mean"],
            stats["std"],
            factor=self.factor,
            method=cfg.upscale.method,
            sr_loader=self._load_sr,
        )
        side = min(self.chip_size) * self.factor
        crop = cfg.data.crop_size if cfg.data.crop_size is not None else side
        if crop > side:
            from pvdetect.errors import ConfigError

            raise ConfigError(
                f"data.crop_size: {crop} px is larger than the chips at model resolution "
                f"({self.chip_size[0]}x{self.chip_size[1]} px x{self.factor})"
            )
        self.crop_size = int(crop)
        a = cfg.augment
        self.jitter = (
            SpectralJitter(a.p, a.gain, a.offset, a.brightness, a.haze) if a.spectral else None
        )
        self.source_names = list(sources) if sources is not None and len(sources) > 1 else []
        self._source_of = (
            np.asarray(source_of, dtype=np.int64) if self.source_names else np.zeros(0, np.int64)
        )
        n_src = len(self.source_names)
        self._primary = list(primary) if primary is not None else [True] * n_src
        if self.source_names and (
            len(self._primary) != n_src or self._source_of.size == 0 or not any(self._primary)
        ):
            raise ValueError("sources need source_of and one primary flag per source")
        self._configured = False
        self._reset_epoch_state()
        #: histograms and loss of the last finished validation epoch (for calibration)
        self.last_val: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state

    def _reset_epoch_state(self) -> None:
        self.train_hist = ThresholdHistogram(HIST_BINS)
        self.val_hist = ThresholdHistogram(HIST_BINS)
        self.val_hist_native = ThresholdHistogram(HIST_BINS)
        self._sums: dict[str, Tensor] = {}
        self._new_source_hists()

    def _new_source_hists(self) -> None:
        """Fresh per-source validation histograms (model and native resolution)."""
        self.val_source_hists = [
            (ThresholdHistogram(HIST_BINS), ThresholdHistogram(HIST_BINS))
            for _ in self.source_names
        ]

    def _add_loss(self, stage: str, loss: Tensor, n: int) -> None:
        acc = self._sums.get(stage)
        if acc is None:
            acc = torch.zeros(2, dtype=torch.float64, device=loss.device)
            self._sums[stage] = acc
        acc[0] += loss.detach().double() * n
        acc[1] += n

    def _loss_sum(self, stage: str) -> tuple[float, float]:
        """Summed loss and sample count of the epoch over all ranks (one reduction)."""
        acc = self._sums.pop(stage, None)
        if acc is None:
            acc = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
        total, count = acc.tolist()
        return total, count

    def _mean_loss(self, stage: str) -> float:
        """Mean loss of the epoch over all ranks (one reduction, one host read)."""
        total, count = self._loss_sum(stage)
        return total / count if count else float("nan")

    # ------------------------------------------------------------------ model

    def configure_model(self) -> None:
        """channels_last weights; optional ``torch.compile`` (once)."""
        if self._configured:
            return
        self.model.to(memory_format=torch.channels_last)
        if self.cfg.compile:
            self.model.compile()
        self._configured = True

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, 1, H, W]`` of normalised input, padded to the model's multiple."""
        return run_model(self.model, x, self.multiple)

    def _load_sr(self) -> nn.Module:
        """The frozen super-resolution network of method ``sr`` (loaded on first use)."""
        from pvdetect.model.sr import load_sr_model

        stats = self.hparams["band_stats"]
        up = self.cfg.upscale
        return load_sr_model(
            up.sr_weights, factor=self.factor, mean=stats["mean"], std=stats["std"]
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints of pvdetect 0.1 stored the band statistics as buffers; they now come
        from the hyper-parameters, so those entries are dropped."""
        state = checkpoint.get("state_dict", {})
        for key in ("band_mean", "band_std"):
            state.pop(key, None)

    def _generator(self, batch_idx: int) -> torch.Generator:
        rank = self.trainer.global_rank if self._trainer is not None else 0
        key = (int(self.cfg.seed), int(self.current_epoch), int(batch_idx), int(rank))
        seed = 0
        for k in key:
            seed = (seed * 1_000_003 + k + 7919) % (2**62)
        g = torch.Generator()
        g.manual_seed(seed)
        return g

    # ------------------------------------------------------------------ preprocessing

    def prepare_train(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Crop (native resolution), D4, normalise, upscale: ``(x, mask, valid)`` on device."""
        x, mask, valid = batch["image"], batch["mask"], batch["valid"].bool()
        if self.cfg.data.mirror_windows:
            x, mask, valid = mirror_windows(x, mask, valid)
        raw_crop = self.crop_size // self.factor
        if raw_crop < x.shape[-2] or raw_crop < x.shape[-1]:
            x, mask, valid = random_crop(
                x, mask, valid, raw_crop, generator=generator, pv_prob=self.cfg.data.crop_pv
            )
        if self.cfg.data.augment:
            x, mask, valid = d4_augment(x, mask, valid, generator=generator)
        if self.jitter is not None:
            x = spectral_augment(x, valid, self.jitter, generator=generator)
        x, valid_up = self.pre.model_input(x, valid)
        return x, upscale_mask(mask, self.factor), valid_up

    def prepare_eval(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Whole chips (windows mirrored with ``data.mirror_windows``), normalised and upscaled:
        ``(x, mask, valid)`` at model resolution."""
        x, mask, valid = batch["image"], batch["mask"], batch["valid"].bool()
        if self.cfg.data.mirror_windows:
            x, mask, valid = mirror_windows(x, mask, valid)
        x, valid = self.pre.model_input(x, valid)
        return x, upscale_mask(mask, self.factor), valid

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss of one augmented batch; metrics accumulate on the device."""
        x, mask, valid = self.prepare_train(batch, self._generator(batch_idx))
        logits = self(x)
        loss = self.loss_fn(logits, mask, valid)
        self._add_loss("train", loss, x.shape[0])
        probs = torch.sigmoid(logits.detach().float())[:, 0]
        self.train_hist.update(probs, mask, valid)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss and histograms at model and at native resolution."""
        x, mask, valid = self.prepare_eval(batch)
        logits = self(x)
        if self.source_names:
            self._validate_sources(batch, logits, mask, valid)
            return
        loss = self.loss_fn(logits, mask, valid)
        self._add_loss("val", loss, x.shape[0])
        probs = torch.sigmoid(logits.float())[:, 0]
        self.val_hist.update(probs, mask, valid)
        if self.factor > 1:
            valid_native = batch["valid"].bool()
            native = self.pre.output_probs(probs, valid_native, native=True)
            self.val_hist_native.update(native, batch["mask"], valid_native)

    def _validate_sources(
        self, batch: dict[str, Tensor], logits: Tensor, mask: Tensor, valid: Tensor
    ) -> None:
        """Loss and histograms per source (the samples of one source at a time)."""
        src = self._source_of[batch["index"].cpu().numpy()]
        probs = torch.sigmoid(logits.float())[:, 0]
        native = valid_native = None
        if self.factor > 1:
            valid_native = batch["valid"].bool()
            native = self.pre.output_probs(probs, valid_native, native=True)
        for s in np.unique(src):
            rows = torch.from_numpy(np.nonzero(src == s)[0]).to(logits.device)
            loss = self.loss_fn(logits[rows], mask[rows], valid[rows])
            self._add_loss(f"val@{s}", loss, int(rows.numel()))
            hist, hist_native = self.val_source_hists[int(s)]
            hist.update(probs[rows], mask[rows], valid[rows])
            if native is not None and valid_native is not None:
                hist_native.update(native[rows], batch["mask"][rows], valid_native[rows])

    def _source_epoch_end(self) -> dict[str, Any]:
        """Reduce the per-source sums and histograms; the primary sources' totals."""
        per: list[dict[str, Any]] = []
        total = count = 0.0
        hist, native = ThresholdHistogram(HIST_BINS), ThresholdHistogram(HIST_BINS)
        for s, name in enumerate(self.source_names):
            t, n = self._loss_sum(f"val@{s}")
            h = self.val_source_hists[s][0].sync()
            h_native = self.val_source_hists[s][1].sync() if self.factor > 1 else h
            primary = bool(self._primary[s])
            per.append({"name": name, "loss": t / n if n else float("nan"), "count": n,
                        "hist": h, "hist_native": h_native, "primary": primary})  # fmt: skip
            if primary:
                total, count = total + t, count + n
                hist.merge(h)
                native.merge(h_native)
        loss = total / count if count else float("nan")
        return {"loss": loss, "hist": hist, "hist_native": native, "sources": per}

    # ------------------------------------------------------------------ epoch ends

    def on_train_epoch_start(self) -> None:
        """Fresh training histogram and loss sum."""
        self.train_hist = ThresholdHistogram(HIST_BINS)
        self._sums.pop("train", None)

    def on_train_epoch_end(self) -> None:
        """Reduce over ranks and log ``train_loss``, ``train_iou``, ``train_f1``."""
        loss = self._mean_loss("train")
        conf = self.train_hist.sync().confusion(0.5)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_iou", conf.iou)
        self.log("train_f1", conf.f1)
        self.train_hist = ThresholdHistogram(HIST_BINS)

    def on_validation_epoch_start(self) -> None:
        """Fresh validation histograms and loss sum."""
        self.val_hist = ThresholdHistogram(HIST_BINS)
        self.val_hist_native = ThresholdHistogram(HIST_BINS)
        self._sums.pop("val", None)
        for s in range(len(self.source_names)):
            self._sums.pop(f"val@{s}", None)
        self._new_source_hists()

    def on_validation_epoch_end(self) -> None:
        """Reduce over ranks, log val metrics at threshold 0.5, keep the histograms."""
        if self.source_names:
            self.last_val = self._source_epoch_end()
            loss, hist, native = (self.last_val[k] for k in ("loss", "hist", "hist_native"))
        else:
            loss = self._mean_loss("val")
            hist = self.val_hist.sync()
            native = self.val_hist_native.sync() if self.factor > 1 else hist
            self.last_val = {"loss": loss, "hist": hist, "hist_native": native}
        if self.trainer.sanity_checking:
            return
        for src in self.last_val.get("sources", []):
            if src["count"]:
                c = src["hist"].confusion(0.5)
                self.log(f"val_loss@{src['name']}", src["loss"])
                self.log(f"val_iou@{src['name']}", c.iou)
                self.log(f"val_f1@{src['name']}", c.f1)
        conf, conf_n = hist.confusion(0.5), native.confusion(0.5)
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_iou", conf.iou, prog_bar=True)
        self.log("val_f1", conf.f1)
        self.log("val_iou_native", conf_n.iou)
        self.log("val_f1_native", conf_n.f1)
        # what the bundle would get from this epoch: the threshold calibrated as in
        # pvdetect.training.train.calibrate, and the IoU there

        thr, _ = native.best_threshold(self.cfg.threshold_metric)
        thr = min(max(float(thr), THRESHOLD_MIN), 1.0 - THRESHOLD_MIN)
        self.log("val_iou_calibrated", native.confusion(thr).iou)
        self.log("val_threshold", thr)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam/AdamW with ReduceLROnPlateau on ``val_loss`` or warm-up + cosine decay."""
        o = self.cfg.optim
        cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        params = [p for p in self.model.parameters() if p.requires_grad]
        # one fused kernel per step where torch has it (CPU, CUDA): 3x faster than foreach
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        opt = cls(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused or None)
        if o.schedule == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            lam = partial(cosine_factor, total=total, warmup=o.warmup, floor=o.min_lr / o.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1},
            }
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=o.plateau_factor, patience=o.plateau_patience, min_lr=o.min_lr
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": plateau,
                "monitor": "val_loss",
                "interval": "epoch",
                # stepped after the epochs that validate (every ``val_every``)
                "frequency": int(self.cfg.val_every),
                "strict": True,
            },
        }


def cosine_factor(step: int, total: int, warmup: float, floor: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser ``step`` of ``total``: linear warm-up, cosine decay.

    Rises linearly from ``1 / warm`` to 1 over the first ``warm = round(warmup * total)``
    steps, then falls along half a cosine to ``floor`` at step ``total`` (and stays there).
    """
    warm = round(warmup * total)
    if step < warm:
        return (step + 1) / warm
    span = max(1, total - warm)
    t = min(1.0, (step - warm) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

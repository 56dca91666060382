"""The one evaluation engine for models and baselines: predict a split batch by batch, count.

Everything accumulates per batch, so memory does not grow with the split: an on-device
:class:`~pvdetect.evaluation.metrics.ThresholdHistogram` of the probabilities of PV and
background pixels (threshold sweep, probability plots), exact per-image confusion counts at
the decision threshold (pixel, per-image and per-site metrics) and per-plant matching
(:class:`~pvdetect.evaluation.metrics.ObjectAccumulator`). Only the per-image scores are kept;
the chips of the report's best/worst grids are predicted again at the end
(:mod:`pvdetect.evaluation.grids`). The sections are described in
:mod:`pvdetect.evaluation.sections`. A :class:`~pvdetect.data.sources.SourceSet` of several
sources can stand for the cache; the metrics then have a ``per_source`` section.

A predictor is any callable ``predict(raw, valid, indices) -> probs``: raw float32
reflectance ``[B, C, H, W]`` and bool ``valid [B, H, W]`` on the device, the cache indices of
the batch (for predictors that seed per chip), PV probabilities ``[B, H, W]`` (tensor or
array) at the chips' resolution or at ``upscale_factor`` times it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.data.raster import BAND_NAMES, IGNORE_INDEX
from pvdetect.errors import ConfigError, DataError
from pvdetect.evaluation.grids import GridInputs, grid_picks, make_grid_chips
from pvdetect.evaluation.metrics import ThresholdHistogram
from pvdetect.evaluation.objects import ObjectAccumulator
from pvdetect.evaluation.sections import (
    per_image_section,
    per_site_section,
    per_source_section,
    pixel_areas,
    pixel_section,
    threshold_section,
)
from pvdetect.io import clean_json

if TYPE_CHECKING:
    import torch

    from pvdetect.data.packed import PackedCache
    from pvdetect.evaluation.figures import GridChip

__all__ = ["HIST_BINS", "EvalSettings", "Evaluation", "Predictor", "evaluate_predictor"]

#: bins of the probability histogram (thresholds of the sweep are its edges)
HIST_BINS = 1000

Predictor = Callable[["torch.Tensor", "torch.Tensor", np.ndarray], Any]


@dataclass
class Evaluation:
    """Result of :func:`evaluate_predictor`.

    Attributes:
        metrics: JSON-ready dict with the sections of
            :data:`pvdetect.evaluation.sections.SECTIONS`.
        grids: the best and worst chips, ready to draw.
    """

    metrics: dict[str, Any]
    grids: list[GridChip] = field(default_factory=list)


@dataclass
class EvalSettings:
    """How :func:`evaluate_predictor` runs and what it records.

    Attributes:
        batch_size: chips per batch.
        device: where the predictor and the accumulators run.
        upscale_factor: resolution factor of the predictions (1 = native); masks are upscaled
            by nearest neighbour and pixel areas divided by ``factor**2``.
        band_stats: ``p2``/``p98`` for the RGB stretch of the grids (default: the cache's).
        band_names: band names of the cache's band order (to find R, G, B).
        iou_threshold: IoU for a detected region to match a true plant.
        n_grid: chips in each of the best and worst grids.
        threshold_source: where the threshold came from, for the report.
        model_info: the ``model`` section of the metrics.
        split: name of the evaluated split.
        progress: print a progress line to stderr every 5 s and at the end.
        mirror_windows: score each chip with its window mirrored over the chip (image,
            mask and valid alike, :func:`pvdetect.model.transforms.mirror_windows`): chips
            cut to their labels then count every labelled pixel, with no window shape to go by.
    """

    batch_size: int = 40
    device: str | torch.device = "cpu"
    upscale_factor: int = 1
    band_stats: dict[str, list[float]] | None = None
    band_names: Sequence[str] = BAND_NAMES
    iou_threshold: float = 0.5
    n_grid: int = 4
    threshold_source: str = "given"
    model_info: dict[str, Any] = field(default_factory=dict)
    split: str = ""
    progress: bool = False
    mirror_windows: bool = False


def _load_batch(
    cache: PackedCache, idx: np.ndarray, dev: torch.device, mirror: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw images, valid and mask of chips ``idx`` on ``dev`` (windows mirrored with
    ``mirror``)."""
    import torch

    from pvdetect.model.transforms import mirror_windows

    def load(arr: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr[idx])).to(dev)

    raw, valid, mask = load(cache.images), load(cache.valid), load(cache.masks)
    if mirror:
        raw, mask, valid = mirror_windows(raw, mask, valid)
    return raw, valid, mask


class _Counts:
    """What one pass over the split accumulates."""

    def __init__(self, n: int, iou_threshold: float, device: torch.device) -> None:
        self.hist = ThresholdHistogram(bins=HIST_BINS, device=device)
        self.per_chip = np.zeros((n, 4), dtype=np.int64)  # tp fp fn tn
        self.objects = ObjectAccumulator(iou_threshold)

    def add(
        self,
        start: int,
        probs: torch.Tensor,
        mask: torch.Tensor,
        valid: torch.Tensor,
        threshold: float,
        areas: np.ndarray,
    ) -> None:
        """Add one batch (mask and valid already on the probabilities' grid)."""
        import torch

        ev = valid.bool() & (mask != IGNORE_INDEX)
        truth = (mask == 1) & ev
        pred = (probs >= threshold) & ev
        self.hist.update(probs, truth.to(torch.uint8), ev)
        neg = ev & ~truth
        counts = torch.stack(
            [
                (pred & truth).sum((1, 2)),
                (pred & neg).sum((1, 2)),
                (~pred & truth).sum((1, 2)),
                (~pred & neg).sum((1, 2)),
            ],
            dim=1,
        )
        self.per_chip[start : start + probs.shape[0]] = counts.cpu().numpy()
        pred_np, truth_np, ev_np = pred.cpu().numpy(), truth.cpu().numpy(), ev.cpu().numpy()
        for j in range(probs.shape[0]):
            self.objects.add(pred_np[j], truth_np[j], ev_np[j], areas[start + j])


def predict_batch(
    predictor: Predictor, raw: torch.Tensor, valid: torch.Tensor, idx: np.ndarray
) -> torch.Tensor:
    """Call a predictor and bring its output to a float32 tensor on the input's device."""
    import torch

    out = predictor(raw, valid, idx)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    return out.to(raw.device, torch.float32)


def to_resolution(
    probs: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring mask and validity to the probabilities' grid (nearest upscaling by ``factor``).

    Raises:
        ConfigError: the predictions fit neither the chips nor ``factor`` times them.
    """
    if probs.shape[-2:] == mask.shape[-2:]:
        return mask, valid
    h, w = mask.shape[-2:]
    if factor > 1 and probs.shape[-2:] == (h * factor, w * factor):
        up = lambda t: t.repeat_interleave(factor, -2).repeat_interleave(factor, -1)  # noqa: E731
        return up(mask), up(valid)
    raise ConfigError(
        f"predictions of shape {tuple(probs.shape[-2:])} do not match chips of {h}x{w} "
        f"(upscale factor {factor})"
    )


def _accumulate(
    predictor: Predictor,
    cache: PackedCache,
    idx_all: np.ndarray,
    threshold: float,
    s: EvalSettings,
    counts: _Counts,
    areas: np.ndarray,
) -> None:
    """Predict the chips batch by batch and add each batch to ``counts``."""
    import torch

    dev = torch.device(s.device)
    factor = max(1, int(s.upscale_factor))
    t0 = last = time.perf_counter()
    for start in range(0, idx_all.size, s.batch_size):
        idx = idx_all[start : start + s.batch_size]
        raw, valid, mask = _load_batch(cache, idx, dev, s.mirror_windows)
        with torch.inference_mode():
            probs = predict_batch(predictor, raw, valid, idx)
            mask_r, valid_r = to_resolution(probs, mask, valid, factor)
            counts.add(start, probs, mask_r, valid_r, threshold, areas)
        now = time.perf_counter()
        done = start + idx.size
        if s.progress and (now - last >= 5.0 or done == idx_all.size):
            last = now
            rate = done / max(now - t0, 1e-9)
            print(f"  {done}/{idx_all.size} chips ({rate:.1f} chips/s)", file=sys.stderr)


def evaluate_predictor(
    predictor: Predictor,
    cache: PackedCache,
    indices: Sequence[int] | np.ndarray,
    threshold: float,
    settings: EvalSettings | None = None,
) -> Evaluation:
    """Evaluate a predictor on chips of a packed cache, accumulating per batch.

    Args:
        predictor: ``predictor(raw, valid, indices) -> probs`` (see the module docstring).
        cache: the packed chips.
        indices: cache indices of the chips to evaluate.
        threshold: decision threshold; a pixel is PV when ``prob >= threshold``.
        settings: batch size, device, resolution and what to record.

    Raises:
        DataError: ``indices`` is empty.
        ConfigError: the threshold is outside [0, 1], or predictions do not fit the chips.
    """
    import torch

    s = settings or EvalSettings()
    idx_all = np.asarray(indices, dtype=np.int64)
    if idx_all.size == 0:
        raise DataError(f"split {s.split or '?'}: no chips to evaluate")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold} is outside [0, 1]")
    dev = torch.device(s.device)
    factor = max(1, int(s.upscale_factor))
    counts = _Counts(idx_all.size, s.iou_threshold, dev)
    areas, area_sources = pixel_areas(cache, idx_all, factor)
    _accumulate(predictor, cache, idx_all, threshold, s, counts, areas)

    per_image = per_image_section(cache, idx_all, counts.per_chip)
    metrics: dict[str, Any] = {
        "model": dict(s.model_info),
        "data": {
            "split": s.split,
            "n_images": int(idx_all.size),
            "resolution": "native" if factor == 1 else f"upscaled x{factor}",
            "upscale_factor": factor,
            "fingerprint": getattr(cache, "fingerprint", ""),
            "pixel_area": ", ".join(sorted(set(area_sources))),
            "windows_mirrored": bool(s.mirror_windows),
        },
        "pixel": pixel_section(counts.per_chip.sum(axis=0)),
        "threshold": threshold_section(counts.hist, threshold, s.threshold_source),
        "object": counts.objects.section(),
        "per_site": per_site_section(per_image),
        "per_image": per_image,
    }
    if per_image and "source" in per_image[0]:
        metrics["per_source"] = per_source_section(per_image, areas)
    picks = grid_picks(per_image, s.n_grid)
    grids = (
        make_grid_chips(
            picks,
            _grid_inputs(
                predictor, cache, idx_all[[j for j, _ in picks]], dev, factor, s.mirror_windows
            ),
            per_image,
            threshold,
            s.band_stats or cache.stats.to_dict(),
            s.band_names,
        )
        if picks
        else []
    )
    return Evaluation(clean_json(metrics), grids)


def _grid_inputs(
    predictor: Predictor,
    cache: PackedCache,
    idx: np.ndarray,
    dev: torch.device,
    factor: int,
    mirror: bool = False,
) -> GridInputs:
    """Predict the grid chips again (memmap reads in increasing index order)."""
    import torch

    order = np.argsort(idx, kind="stable")
    raw, valid, mask = _load_batch(cache, idx[order], dev, mirror)
    with torch.inference_mode():
        probs = predict_batch(predictor, raw, valid, idx[order])
        mask_t, valid_t = to_resolution(probs, mask, valid, factor)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    return GridInputs(
        raw.cpu().numpy()[inv],
        probs.cpu().numpy()[inv],
        mask_t.cpu().numpy()[inv],
        valid_t.cpu().numpy()[inv],
    )

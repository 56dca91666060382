"""Per-band statistics of valid pixels: exact streaming moments and training-split summaries.

Used by the packed cache (the normalisation statistics stored in every bundle) and by
``pvdetect check`` (its summary); nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pvdetect.errors import DataError

__all__ = ["BandStats", "RunningBandStats", "band_stats", "weighted_band_stats"]

_PERCENTILE_SAMPLES = 2_000_000  # per band; exact percentiles below this many valid pixels


@dataclass
class BandStats:
    """Per-band statistics of valid training pixels (raw reflectance units).

    ``mean`` and ``std`` are exact (population std; a zero std is stored as 1.0 so that
    normalisation never divides by zero); ``p2`` and ``p98`` are exact up to 2 million valid
    pixels per band, else estimated from a uniform random sample of that size.
    """

    mean: list[float]
    std: list[float]
    p2: list[float]
    p98: list[float]

    def to_dict(self) -> dict:
        """Plain dictionary of lists."""
        return {"mean": list(self.mean), "std": list(self.std), "p2": list(self.p2),
                "p98": list(self.p98)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        try:
            out = cls(*([float(v) for v in d[k]] for k in ("mean", "std", "p2", "p98")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"band statistics: malformed ({exc})") from None
        if len({len(out.mean), len(out.std), len(out.p2), len(out.p98)}) != 1:
            raise DataError("band statistics: lists of different lengths")
        return out


class RunningBandStats:
    """Exact streaming per-band count, mean, variance, min and max (Chan et al. merge).

    Feed it ``[C, n]`` blocks of valid pixel values with :meth:`update`.
    """

    def __init__(self, bands: int) -> None:
        self.count = 0
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def update(self, values: np.ndarray) -> None:
        """Add a ``[C, n]`` block of values."""
        n = values.shape[1]
        if n == 0:
            return
        v = values.astype(np.float64, copy=False)
        mean = v.mean(axis=1)
        m2 = ((v - mean[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.min = np.minimum(self.min, v.min(axis=1))
        self.max = np.maximum(self.max, v.max(axis=1))

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band."""
        if self.count == 0:
            return np.full_like(self.mean, np.nan)
        return np.sqrt(self.m2 / self.count)


def _scan(
    images: np.ndarray,
    valid: np.ndarray,
    idx: Sequence[int],
    budget: int,
    rng: np.random.Generator,
) -> tuple[RunningBandStats, np.ndarray]:
    """Exact moments of the valid pixels of chips ``idx`` and a uniform sample of about
    ``budget`` of them (all below that), read chip by chip; ``[C, n]`` sample."""
    c = images.shape[1]
    run = RunningBandStats(c)
    total = int(sum(int(valid[i].sum()) for i in idx))
    keep = min(1.0, budget / total) if total else 1.0
    samples: list[np.ndarray] = []
    for i in idx:
        vals = np.asarray(images[i])[:, np.asarray(valid[i])]
        run.update(vals)
        samples.append(vals[:, rng.random(vals.shape[1]) < keep] if keep < 1.0 else vals)
    return run, np.concatenate(samples, axis=1) if samples else np.zeros((c, 0))


def band_stats(
    images: np.ndarray, valid: np.ndarray, idx: Sequence[int], where: str = "chips"
) -> BandStats:
    """Exact mean/std and (sampled beyond 2M pixels) p2/p98 of the valid pixels of chips ``idx``.

    Args:
        images: ``[N, C, H, W]`` reflectance (memory-mapped is fine: read chip by chip).
        valid: ``[N, H, W]`` bool.
        idx: chips to take.
        where: names the chips in the error raised when none has a valid pixel.
    """
    run, pool = _scan(images, valid, idx, _PERCENTILE_SAMPLES, np.random.default_rng(0))
    if run.count == 0:
        raise DataError(f"{where}: no valid pixel in the training chips")
    p2, p98 = np.percentile(pool, [2, 98], axis=1)
    std = [float(s) if s > 0 else 1.0 for s in run.std]
    return BandStats(
        mean=[float(v) for v in run.mean], std=std, p2=[float(v) for v in p2],
        p98=[float(v) for v in p98],
    )  # fmt: skip


def weighted_band_stats(
    images: np.ndarray,
    valid: np.ndarray,
    groups: Sequence[tuple[Sequence[int], float]],
    where: str = "chips",
) -> BandStats:
    """Statistics of a mixture of chip groups, each weighing its share of the whole.

    Group ``g`` (chips ``idx``, weight ``w``) contributes ``w / sum(weights)`` of the mixture
    whatever its pixel count: the statistics of what a sampler that draws the groups at those
    weights shows the model. Mean and std are exact (from each group's exact moments); p2 and
    p98 are weighted percentiles of each group's valid pixels (sampled beyond
    ``2M / groups`` pixels per group). Groups without chips or with weight 0 are left out.
    """
    live = [(np.asarray(i, np.int64), float(w)) for i, w in groups if len(i) and w > 0]
    if not live:
        raise DataError(f"{where}: no valid pixel in the training chips")
    c = images.shape[1]
    rng = np.random.default_rng(0)
    shares, moments, pools = [], [], []
    for idx, w in live:
        run, pool = _scan(images, valid, idx, _PERCENTILE_SAMPLES // len(live), rng)
        if run.count:
            shares.append(w)
            moments.append(run)
            pools.append(pool.astype(np.float64))
    if not moments:
        raise DataError(f"{where}: no valid pixel in the training chips")
    p = np.asarray(shares) / sum(shares)
    mean = sum(pi * r.mean for pi, r in zip(p, moments, strict=True))
    second = sum(pi * (r.std**2 + r.mean**2) for pi, r in zip(p, moments, strict=True))
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    values = np.concatenate(pools, axis=1)
    weight = np.concatenate(
        [np.full(q.shape[1], pi / q.shape[1]) for pi, q in zip(p, pools, strict=True)]
    )
    p2, p98 = (np.empty(c), np.empty(c))
    for b in range(c):
        order = np.argsort(values[b], kind="stable")
        cum = np.cumsum(weight[order])
        cum /= cum[-1]
        for out, q in ((p2, 0.02), (p98, 0.98)):
            out[b] = values[b][order][min(int(np.searchsorted(cum, q)), len(cum) - 1)]
    return BandStats(
        mean=[float(v) for v in mean], std=[float(s) if s > 0 else 1.0 for s in std],
        p2=[float(v) for v in p2], p98=[float(v) for v in p98],
    )  # fmt: skip

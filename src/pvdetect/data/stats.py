"""Per-band statistics of valid pixels: exact streaming moments and training-split summaries.

Used by the packed cache (the normalisation statistics stored in every bundle) and by
``pvdetect check`` (its summary); nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pvdetect.errors import DataError

__all__ = ["BandStats", "RunningBandStats", "band_stats"]

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
    c = images.shape[1]
    run = RunningBandStats(c)
    total = int(sum(int(valid[i].sum()) for i in idx))
    if total == 0:
        raise DataError(f"{where}: no valid pixel in the training chips")
    keep = min(1.0, _PERCENTILE_SAMPLES / total)
    rng = np.random.default_rng(0)
    samples: list[np.ndarray] = []
    for i in idx:
        vals = np.asarray(images[i])[:, np.asarray(valid[i])]
        run.update(vals)
        if keep < 1.0:
            pick = rng.random(vals.shape[1]) < keep
            vals = vals[:, pick]
        samples.append(vals)
    pool = np.concatenate(samples, axis=1)
    p2, p98 = np.percentile(pool, [2, 98], axis=1)
    std = [float(s) if s > 0 else 1.0 for s in run.std]
    return BandStats(
        mean=[float(v) for v in run.mean], std=std, p2=[float(v) for v in p2],
        p98=[float(v) for v in p98],
    )  # fmt: skip

"""Training sources: several datasets and synthetic chips, seen as one packed cache.

Every source keeps a packed cache of its own: a dataset folder (any layout) the cache
:func:`~pvdetect.data.packed.build_cache` makes of it (format and fingerprint unchanged, so a
single-source run and ``evaluate`` share it), and synthetic chips a cache filled straight from
:func:`pvdetect.synth.dataset.synthetic_chips` (no GeoTIFFs written) in ``cache_dir`` or
``~/.cache/pvdetect``, keyed by style, count, seed, chip size and a hash of the generator's
code. :class:`SourceSet` puts them side by side: global chip indices run over the sources in
order, arrays are read per source and padded to the largest chip with invalid pixels, band
statistics are those of the combined training split (each source weighing its share of the
draws, not its pixel count), and the splits can be overridden (the folds of cross-validation,
:func:`cv_splits`) without repacking anything.

Nothing here imports model code; the synthetic generator is imported only when synthetic chips
are packed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.data.exclude import EXCLUDED
from pvdetect.data.layouts import SPLITS, ChipRecord, find_chips
from pvdetect.data.loading import choose_band_order
from pvdetect.data.packed import (
    PackedCache,
    build_cache,
)
from pvdetect.data.radiometry import RadiometryOptions
from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.data.stats import BandStats, band_stats, weighted_band_stats
from pvdetect.errors import ConfigError, DataError

if TYPE_CHECKING:
    pass

__all__ = [
    "Source",
    "SourceSet",
    "cv_splits",
    "open_dataset",
    "source_name",
]

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass
class Source:
    """One source of a :class:`SourceSet`.

    Attributes:
        name: What metrics columns (``val_iou@NAME``) and reports call it.
        kind: ``"dataset"`` (chips on disk) or ``"synthetic"``.
        cache: Its packed chips.
        weight: Sampling weight (share of the draws: weight / sum of weights).
        drop_empty: ``data.drop_empty`` for its chips.
        oversample_pv: ``data.oversample_pv`` for its chips.
        settings: How it was made (root, fractions, style, seed ...), for the bundle.
        excluded: Indices (in its cache) of the chips left out of every split
            (:mod:`pvdetect.data.exclude`).
    """

    name: str
    kind: str
    cache: PackedCache
    weight: float = 1.0
    drop_empty: float = 0.0
    oversample_pv: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    excluded: tuple[int, ...] = ()

    @property
    def where(self) -> str:
        """The dataset folder (or the synthetic source's name) for messages."""
        return str(self.settings.get("root") or self.name)


class _Stacked:
    """One array of every source's cache, indexed by global chip index (padded, read-only).

    Supports what training and evaluation do with a cache array: ``a[i]``, ``a[idx]`` with an
    integer array, ``a[i, band]`` and ``a[idx, band]``, ``shape``, ``ndim``, ``dtype``.
    Holds the caches, not their memory maps, so it pickles small (DataLoader workers).
    """

    def __init__(self, sset: SourceSet, attr: str, fill: Any, dtype: Any) -> None:
        self._set = sset
        self._attr = attr
        self._fill = fill
        self.dtype = np.dtype(dtype)
        n, c, h, w = sset.shape
        self.shape = (n, c, h, w) if attr == "images" else (n, h, w)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        scalar = np.ndim(key) == 0
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"chip index out of range [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.full((idx.size, *self.shape[1:]), self._fill, dtype=self.dtype)
        which = self._set.source_of[idx]
        for s in np.unique(which):
            rows = np.nonzero(which == s)[0]
            local = idx[rows] - self._set.offsets[s]
            arr = getattr(self._set.sources[s].cache, self._attr)
            part = arr[local] if local.size > 1 else arr[int(local[0])][None]
            out[rows, ..., : part.shape[-2], : part.shape[-1]] = part
        out = out[0] if scalar else out
        return out[(slice(None),) * (0 if scalar else 1) + rest] if rest else out


class SourceSet:
    """Several packed caches as one: the cache interface training and evaluation use.

    Attributes:
        sources: The sources, in order (global chip indices run over them in this order).
        offsets: int64 ``[S + 1]``: first global index of each source (and the total).
        source_of: int64 ``[N]``: the source of each chip.
        records: The chips (with overridden splits, see :meth:`with_splits`).
        chips: Per-chip geometry (as :attr:`PackedCache.chips`).
        images, masks, valid: Padded views (see :class:`_Stacked`).
        stats: Band statistics of the combined training split (valid pixels only; each
            source weighs its sampling share, see :func:`~pvdetect.data.stats.weighted_band_stats`).
        fingerprint: The cache's fingerprint for one source with its own splits, else a hash
            of the sources' fingerprints and the splits.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        splits: Sequence[str] | None = None,
        stats: BandStats | None = None,
    ) -> None:
        if not sources:
            raise DataError("no training source given")
        self.sources = list(sources)
        counts = [len(s.cache) for s in self.sources]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.source_of = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
        bands = {s.cache.images.shape[1] for s in self.sources}
        if len(bands) > 1:
            have = ", ".join(f"{s.where}: {s.cache.images.shape[1]}" for s in self.sources)
            raise DataError(f"{self.sources[1].where}: sources with different band counts ({have})")
        n = int(self.offsets[-1])
        h = max(s.cache.images.shape[2] for s in self.sources)
        w = max(s.cache.images.shape[3] for s in self.sources)
        self.shape = (n, bands.pop(), h, w)
        records = [r for s in self.sources for r in s.cache.records]
        gone = {int(o) + i for s, o in zip(self.sources, self.offsets, strict=False)
                for i in s.excluded}  # fmt: skip
        if gone and splits is None:
            splits = [r.split for r in records]
        self._own_splits = splits is None
        if splits is not None:
            if len(splits) != n or any(sp not in (*SPLITS, EXCLUDED) for sp in splits):
                raise ValueError("splits must give train, val, test or excluded for every chip")
            records = [
                ChipRecord(r.image, r.mask, EXCLUDED if i in gone else sp, r.site, r.key)
                for i, (r, sp) in enumerate(zip(records, splits, strict=True))
            ]
        self.records = records
        self.chips = [c for s in self.sources for c in s.cache.chips]
        self.band_order = list(self.sources[0].cache.band_order)
        self.path = self.sources[0].cache.path
        self.images = _Stacked(self, "images", 0.0, np.float32)
        self.masks = _Stacked(self, "masks", IGNORE_INDEX, np.uint8)
        self.valid = _Stacked(self, "valid", False, np.bool_)
        self._pv = np.concatenate([s.cache.pv_fraction() for s in self.sources])
        self.fingerprint = self._fingerprint()
        self.stats = stats if stats is not None else self._combined_stats()

    # ------------------------------------------------------------------ the cache interface

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def names(self) -> list[str]:
        """The source names, in order."""
        return [s.name for s in self.sources]

    @property
    def root(self) -> Path:
        """The folder of the first source's chips."""
        return self.sources[0].cache.root

    def indices(self, split: str, source: int | None = None) -> np.ndarray:
        """int64 global indices of the chips of ``split`` (of one source, or all)."""
        lo, hi = (0, len(self)) if source is None else self.offsets[source : source + 2]
        return np.array(
            [i for i in range(int(lo), int(hi)) if self.records[i].split == split], np.int64
        )

    def pv_fraction(self) -> np.ndarray:
        """float64 ``[N]``: PV share of the labelled pixels of each chip."""
        return self._pv.copy()

    # ------------------------------------------------------------------ sources

    def primary(self) -> list[bool]:
        """Sources whose validation chips make the validation metrics and the threshold: the
        datasets with validation chips, or (with none) every source with some."""
        has_val = [self.indices("val", s).size > 0 for s in range(len(self.sources))]
        real = [v and src.kind == "dataset" for v, src in zip(has_val, self.sources, strict=True)]
        return real if any(real) else has_val

    def with_splits(self, splits: Sequence[str]) -> SourceSet:
        """The same chips with other splits (statistics of the new training split); excluded
        chips stay excluded."""
        return SourceSet(self.sources, splits)

    def source_stats(self, s: int) -> BandStats:
        """Band statistics of the training chips of source ``s`` alone."""
        if self._own_splits:
            return self.sources[s].cache.stats
        idx = self.indices("train", s)
        return band_stats(self.images, self.valid, idx, where=self.sources[s].where)

    def describe(self) -> list[dict[str, Any]]:
        """Per source: name, kind, weight, settings, fingerprint, chips per split and band
        statistics (JSON-ready, for the bundle)."""
        out = []
        for s, src in enumerate(self.sources):
            out.append(
                {
                    "name": src.name,
                    "kind": src.kind,
                    "weight": float(src.weight),
                    "settings": dict(src.settings),
                    "fingerprint": src.cache.fingerprint,
                    "chips": {sp: int(self.indices(sp, s).size) for sp in SPLITS}
                    | ({EXCLUDED: len(src.excluded)} if src.excluded else {}),
                    "band_stats": self.source_stats(s).to_dict(),
                }
            )
        return out

    # ------------------------------------------------------------------ helpers

    def _fingerprint(self) -> str:
        if len(self.sources) == 1 and self._own_splits:
            return self.sources[0].cache.fingerprint
        payload = json.dumps(
            [
                [s.name for s in self.sources],
                [s.cache.fingerprint for s in self.sources],
                None if self._own_splits else [r.split for r in self.records],
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def _combined_stats(self) -> BandStats:
        if len(self.sources) == 1 and self._own_splits:
            return self.sources[0].cache.stats
        train = self.indices("train")
        if train.size == 0:
            train = np.arange(len(self), dtype=np.int64)
            return band_stats(self.images, self.valid, train, where=self.sources[0].where)
        # each source weighs its share of the draws (weight / sum of weights), not its pixel
        # count: 600 synthetic chips beside 90 small real ones must not set the real scale
        groups = [(self.indices("train", s), src.weight) for s, src in enumerate(self.sources)]
        return weighted_band_stats(self.images, self.valid, groups, where=self.sources[0].where)


# --------------------------------------------------------------------------- opening sources


def source_name(root: str | Path) -> str:
    """Default name of a dataset source: its folder name (a manifest: the file stem)."""
    p = Path(root)
    base = p.stem if p.suffix.lower() == ".csv" else p.name
    if not base:
        base = p.resolve().name
    return _NAME_CHARS.sub("_", base).strip("_.-+") or "data"


def open_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    band_order: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    bands: str | Sequence[str | int] | None = None,
    wanted: Sequence[str] | None = None,
    radiometry: RadiometryOptions | None = None,
) -> PackedCache:
    """Find the chips of a dataset folder (its own split handling) and pack them.

    ``bands``/``wanted`` choose the bands (:func:`~pvdetect.data.packed.choose_band_order`),
    ``radiometry`` is ``--offset``/``--scale``.
    """
    records = find_chips(
        Path(root), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    order = choose_band_order(records, band_order, bands, wanted)
    return build_cache(records, cache_dir, order, radiometry=radiometry)


# --------------------------------------------------------------------------- cross-validation


def _natural(text: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def fold_of_sites(sites: dict[str, int], folds: int, seed: int) -> dict[str, int]:
    """Deal whole sites into ``folds`` folds of similar chip counts (0-based fold per site).

    Sites are shuffled with ``seed`` from their sorted order, then, largest first (ties in the
    shuffled order), each goes to the fold with the fewest chips so far.
    """
    order = sorted(sites, key=_natural)
    random.Random(seed).shuffle(order)
    rank = {s: i for i, s in enumerate(order)}
    load = [0] * folds
    out: dict[str, int] = {}
    for site in sorted(order, key=lambda s: (-sites[s], rank[s])):
        k = min(range(folds), key=lambda f: (load[f], f))
        out[site] = k
        load[k] += sites[site]
    return out


def cv_splits(sset: SourceSet, folds: int, fold: int, seed: int = 0) -> SourceSet:
    """The chips of fold ``fold`` (1-based) of a site-grouped ``folds``-fold cross-validation.

    The training and validation chips of the dataset sources are pooled and dealt into folds
    by site (a site id is taken per source); fold ``fold`` validates, the others train. Test
    chips and the chips of synthetic sources keep their split. Excluded chips count in the
    deal (so that editing an exclusion list does not move sites between folds) but stay out.

    Raises:
        ConfigError: fewer sites than folds, or ``fold`` outside ``1..folds``.
    """
    if not 1 <= fold <= folds:
        raise ConfigError(f"cv_fold: must be in [1, {folds}], got {fold}")
    counts: dict[str, int] = defaultdict(int)
    keys: list[str | None] = []
    for i, r in enumerate(sset.records):
        s = int(sset.source_of[i])
        src = sset.sources[s]
        split = r.split
        if split == EXCLUDED:  # its split in the dataset, for the deal only
            split = src.cache.records[i - int(sset.offsets[s])].split
        key = f"{src.name}/{r.site}"
        if src.kind == "dataset" and split in ("train", "val"):
            counts[key] += 1
        keys.append(key if src.kind == "dataset" and r.split in ("train", "val") else None)
    if len(counts) < folds:
        raise ConfigError(
            f"cv: {folds} folds need at least {folds} sites in the training and validation "
            f"chips of the datasets, found {len(counts)}"
        )
    assign = fold_of_sites(dict(counts), folds, seed)
    splits = [
        r.split if key is None else ("val" if assign[key] == fold - 1 else "train")
        for r, key in zip(sset.records, keys, strict=True)
    ]
    return sset.with_splits(splits)

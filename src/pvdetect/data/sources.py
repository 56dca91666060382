"""Training sources: several datasets and synthetic chips, seen as one packed cache.

Every source keeps a packed cache of its own: a dataset folder (any layout) the cache
:func:`~pvdetect.data.packed.build_cache` makes of it (format and fingerprint unchanged, so a
single-source run and ``evaluate`` share it), and synthetic chips a cache filled straight from
:func:`pvdetect.synth.dataset.synthetic_chips` (no GeoTIFFs written) in ``cache_dir`` or
``~/.cache/pvdetect``, keyed by style, count, seed, chip size and a hash of the generator's
code. :class:`SourceSet` puts them side by side: global chip indices run over the sources in
order, arrays are read per source and padded to the largest chip with invalid pixels, band
statistics are those of the combined training split, and the splits can be overridden (the
folds of cross-validation, :func:`cv_splits`) without repacking anything.

Nothing here imports model code; the synthetic generator is imported only when synthetic chips
are packed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.data.layouts import SPLITS, ChipRecord, find_chips
from pvdetect.data.packed import (
    FORMAT_VERSION,
    ChipArrays,
    PackedCache,
    build_cache,
    open_or_pack,
    write_packed,
)
from pvdetect.data.raster import DEFAULT_NODATA, IGNORE_INDEX
from pvdetect.data.stats import BandStats, band_stats
from pvdetect.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pvdetect.config import DataConfig

__all__ = [
    "Source",
    "SourceSet",
    "cv_splits",
    "open_dataset",
    "open_sources",
    "open_synthetic",
    "source_name",
]

#: chip side of synthetic chips when no real dataset gives one (as ``pvdetect synth``)
DEFAULT_SYNTH_SIZE = 256
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
    """

    name: str
    kind: str
    cache: PackedCache
    weight: float = 1.0
    drop_empty: float = 0.0
    oversample_pv: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

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
        stats: Band statistics of the combined training split (valid pixels only).
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
        self._own_splits = splits is None
        if splits is not None:
            if len(splits) != n or any(sp not in SPLITS for sp in splits):
                raise ValueError("splits must give train, val or test for every chip")
            records = [
                ChipRecord(r.image, r.mask, sp, r.site, r.key)
                for r, sp in zip(records, splits, strict=True)
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
        """The same chips with other splits (statistics of the new training split)."""
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
                    "chips": {sp: int(self.indices(sp, s).size) for sp in SPLITS},
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
) -> PackedCache:
    """Find the chips of a dataset folder (its own split handling) and pack them."""
    records = find_chips(
        Path(root), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    return build_cache(records, cache_dir, band_order)


def _generator_hash() -> str:
    """Hash of the synthetic generator's code: a changed generator gives a new cache."""
    import pvdetect.synth as synth

    h = hashlib.sha256()
    for p in sorted(Path(synth.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _synthetic_cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pvdetect"


def open_synthetic(
    chips: int,
    *,
    style: str = "mixed",
    seed: int = 0,
    chip_size: int = DEFAULT_SYNTH_SIZE,
    cache_dir: str | Path | None = None,
) -> PackedCache:
    """The packed cache of synthetic chips, generated into it on first use.

    The chips are those of :func:`pvdetect.synth.dataset.synthetic_chips` (``region`` None for
    the style ``mixed``), with its train/val/test split by site; records name them as
    ``synthetic/STYLE-seedS-SIZEpx/<split>/input/img(N).tif`` (no such file exists).

    Raises:
        ConfigError: a bad count, style, seed or size.
        OutputError: the cache folder cannot be written.
    """
    from pvdetect.synth.dataset import synthetic_chips

    region = {"mixed": None, "brazil": "brazil", "temperate": "temperate"}.get(style, "?")
    if region == "?":
        raise ConfigError(f"data.synthetic.style: must be brazil, temperate or mixed, got {style}")
    ident = ["synthetic", style, int(chips), int(seed), int(chip_size)]
    ds_id = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    fp = hashlib.sha256(json.dumps([FORMAT_VERSION, *ident, _generator_hash()]).encode())
    fp_text = fp.hexdigest()[:20]
    base = _synthetic_cache_dir(cache_dir)
    folder = Path("synthetic") / f"{style}-seed{seed}-{chip_size}px"

    def write(tmp: Path) -> None:
        from rasterio.crs import CRS

        records: list[ChipRecord] = []
        wkt: dict[str, str] = {}

        def arrays() -> Any:
            for chip in synthetic_chips(chips, seed, chip_size, region):
                where = folder / chip.split
                records.append(
                    ChipRecord(
                        where / "input" / f"img({chip.n}).tif",
                        where / "labels" / f"target({chip.n}).tif",
                        chip.split,
                        chip.site,
                        f"{chip.split}/{chip.n}",
                    )
                )
                if chip.crs not in wkt:
                    wkt[chip.crs] = CRS.from_user_input(chip.crs).to_wkt()
                image = np.where(chip.valid[None], chip.image, np.float32(0.0))
                mask = np.where(chip.valid, chip.label.astype(np.uint8), np.uint8(IGNORE_INDEX))
                geometry = {
                    "height": chip_size,
                    "width": chip_size,
                    "crs": wkt[chip.crs],
                    "transform": list(chip.transform)[:6],
                    "nodata": DEFAULT_NODATA,
                    "mask_nodata": DEFAULT_NODATA,
                }
                yield ChipArrays(image.astype(np.float32), mask, chip.valid.copy(), geometry)

        head = {"fingerprint": fp_text, "dataset_id": ds_id, "band_order": [0, 1, 2, 3]}
        shape = (int(chips), 4, int(chip_size), int(chip_size))
        extra = {"synthetic": {"style": style, "chips": chips, "seed": seed,
                               "chip_size": chip_size}}  # fmt: skip
        write_packed(tmp, records, shape, arrays(), head, extra)

    return open_or_pack(base, fp_text, ds_id, write)


def _names(wanted: list[str | None], defaults: list[str]) -> list[str]:
    """The given names, and unique defaults for the rest (``NAME-2`` ... on a clash)."""
    taken = {w for w in wanted if w}
    out: list[str] = []
    for w, d in zip(wanted, defaults, strict=True):
        if w:
            out.append(w)
            continue
        name, k = d, 2
        while name in taken:
            name = f"{d}-{k}"
            k += 1
        taken.add(name)
        out.append(name)
    return out


def open_sources(data: DataConfig, seed: int = 0) -> SourceSet:
    """Pack every source of a ``data`` configuration section and put them side by side.

    Order: ``data.root`` (weight 1), then ``data.sources``, then the synthetic chips. The
    synthetic chip size defaults to the largest real chip (else 256).

    Raises:
        ConfigError: no source is configured.
        DataError: a dataset cannot be read, or the sources do not fit together.
    """
    specs: list[dict[str, Any]] = []
    if data.root:
        specs.append({"root": data.root, "weight": 1.0, "name": None})
    specs += [s.model_dump() for s in data.sources]
    syn = data.synthetic
    wanted = [s.get("name") for s in specs] + ([syn.name] if syn.chips else [])
    defaults = [source_name(s["root"]) for s in specs] + (
        [f"synthetic-{syn.style}"] if syn.chips else []
    )
    names = _names(wanted, defaults)
    sources: list[Source] = []
    for spec, name in zip(specs, names, strict=False):
        val = spec.get("val_fraction")
        test = spec.get("test_fraction")
        val = data.val_fraction if val is None else val
        test = data.test_fraction if test is None else test
        if val + test >= 1.0:
            raise ConfigError(
                f"{spec['root']}: val_fraction + test_fraction must be < 1, got {val} + {test}"
            )
        order = spec.get("band_order") if spec.get("band_order") is not None else data.band_order
        cache = open_dataset(
            spec["root"],
            seed=seed,
            val_fraction=val,
            test_fraction=test,
            band_order=order,
            cache_dir=data.cache_dir,
        )
        drop = spec.get("drop_empty")
        over = spec.get("oversample_pv")
        settings = {"root": str(spec["root"]), "val_fraction": val, "test_fraction": test,
                    "band_order": order}  # fmt: skip
        sources.append(
            Source(
                name=name,
                kind="dataset",
                cache=cache,
                weight=float(spec.get("weight", 1.0)),
                drop_empty=data.drop_empty if drop is None else drop,
                oversample_pv=data.oversample_pv if over is None else over,
                settings=settings,
            )
        )
    if syn.chips:
        size = syn.chip_size
        if size is None:
            sides = [max(s.cache.images.shape[-2:]) for s in sources]
            size = max(sides) if sides else DEFAULT_SYNTH_SIZE
        cache = open_synthetic(
            syn.chips, style=syn.style, seed=syn.seed, chip_size=size, cache_dir=data.cache_dir
        )
        sources.append(
            Source(
                name=names[-1],
                kind="synthetic",
                cache=cache,
                weight=float(syn.weight),
                drop_empty=data.drop_empty,
                oversample_pv=data.oversample_pv,
                settings={
                    "style": syn.style,
                    "chips": syn.chips,
                    "seed": syn.seed,
                    "chip_size": size,
                },
            )
        )
    if not sources:
        raise ConfigError("no dataset given: pass DATA, --data or --synthetic")
    return SourceSet(sources)


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
    chips and the chips of synthetic sources keep their split.

    Raises:
        ConfigError: fewer sites than folds, or ``fold`` outside ``1..folds``.
    """
    if not 1 <= fold <= folds:
        raise ConfigError(f"cv_fold: must be in [1, {folds}], got {fold}")
    counts: dict[str, int] = defaultdict(int)
    keys: list[str | None] = []
    for i, r in enumerate(sset.records):
        src = sset.sources[int(sset.source_of[i])]
        if src.kind == "dataset" and r.split in ("train", "val"):
            key = f"{src.name}/{r.site}"
            counts[key] += 1
            keys.append(key)
        else:
            keys.append(None)
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

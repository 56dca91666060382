"""Packed chip cache: every chip decoded once into memory-mapped ``.npy`` arrays.

A cache lives in ``cache_dir/<fingerprint>/`` with ``images.npy`` (float32 ``[N, C, H, W]``, raw
reflectance, invalid pixels 0), ``masks.npy`` (uint8 ``[N, H, W]``, 0/1, 255 = ignore),
``valid.npy`` (bool ``[N, H, W]``) and ``meta.json`` (records, per-chip geometry, training
statistics). The fingerprint covers every file's path, size and mtime, the split assignment,
the band order and the format version, so a changed file gives a new cache and the stale one of
the same dataset is removed. Caches are built in a temporary folder and renamed into place, so a
crash never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import operator
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap

from pvdetect.data.layouts import ChipRecord, dataset_root, dir_writable
from pvdetect.data.raster import (
    IGNORE_INDEX,
    RasterInfo,
    raster_info,
    read_raster,
    valid_pixels,
)
from pvdetect.data.stats import BandStats, band_stats
from pvdetect.errors import ConfigError, DataError, OutputError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_DIR_NAME = ".pvdetect_cache"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600


class PackedCache:
    """Memory-mapped arrays of a packed dataset (read-only).

    Attributes:
        path: The cache folder ``cache_dir/<fingerprint>``.
        images: float32 ``[N, C, H, W]`` raw reflectance, invalid pixels 0.
        masks: uint8 ``[N, H, W]``: 0/1, 255 = ignore (mask nodata or image invalid).
        valid: bool ``[N, H, W]``: image valid (all bands finite and != nodata).
        records: The chips, in array order.
        stats: Band statistics of the training split, valid pixels only.
        fingerprint: Hash of files, splits, band order and format version.
        band_order: 0-based source bands packed as Red, Green, Blue, NIR.
        chips: Per chip: original ``height``, ``width``, ``crs`` (WKT or None), ``transform``
            (6 numbers), ``nodata`` of image and mask.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: cannot read packed cache metadata ({exc})") from None
        if meta.get("format_version") != FORMAT_VERSION or not meta.get("complete"):
            raise DataError(f"{meta_path}: packed cache of another format version or incomplete")
        self.fingerprint: str = meta["fingerprint"]
        self.band_order: list[int] = list(meta["band_order"])
        self.records = [
            ChipRecord(Path(r["image"]), Path(r["mask"]), r["split"], r["site"], r["key"])
            for r in meta["records"]
        ]
        self.chips: list[dict] = meta["chips"]
        self.stats = BandStats.from_dict(meta["stats"])
        self._pv = np.asarray(meta["pv_fraction"], dtype=np.float64)
        self._open_arrays()

    def _open_arrays(self) -> None:
        try:
            self.images = np.load(self.path / "images.npy", mmap_mode="r")
            self.masks = np.load(self.path / "masks.npy", mmap_mode="r")
            self.valid = np.load(self.path / "valid.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: packed cache arrays unreadable ({exc})") from None
        n = len(self.records)
        if not (
            self.images.ndim == 4
            and self.images.shape[0] == n
            and self.masks.shape == (n, *self.images.shape[2:])
            and self.valid.shape == self.masks.shape
        ):
            raise DataError(f"{self.path}: packed cache arrays do not match its metadata")

    def __getstate__(self) -> dict:
        # memmaps are reopened in the receiving process instead of being pickled whole
        state = self.__dict__.copy()
        for k in ("images", "masks", "valid"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open_arrays()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of :attr:`images`."""
        return tuple(self.images.shape)  # type: ignore[return-value]

    @property
    def root(self) -> Path:
        """The dataset folder of the cached chips."""
        return dataset_root(self.records)

    def indices(self, split: str) -> np.ndarray:
        """int64 positions of the chips of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return np.array([i for i, r in enumerate(self.records) if r.split == split], np.int64)

    def pv_fraction(self) -> np.ndarray:
        """float64 ``[N]``: PV share of the labelled pixels of each chip (0 when none)."""
        return self._pv.copy()


class ChipDataset(torch.utils.data.Dataset):
    """Chips of a :class:`PackedCache`; an item is a slice of the memmaps, nothing is decoded.

    Items are ``dict(image=float32 [C, H, W], mask=uint8 [H, W], valid=bool [H, W], index=int)``
    where ``index`` is the chip's position in the cache.
    """

    def __init__(self, cache: PackedCache, indices: Sequence[int] | np.ndarray) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(cache)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ConfigError(f"chip indices must be in [0, {n}), got out-of-range values")

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict:
        idx = int(self.indices[i])
        c = self.cache
        return {
            "image": torch.from_numpy(np.array(c.images[idx])),
            "mask": torch.from_numpy(np.array(c.masks[idx])),
            "valid": torch.from_numpy(np.array(c.valid[idx])),
            "index": idx,
        }


# --------------------------------------------------------------------------- building


def default_cache_dir(records: Sequence[ChipRecord]) -> Path:
    """``ROOT/.pvdetect_cache`` where ROOT holds all files, else ``~/.cache/pvdetect``."""
    root = dataset_root(records)
    target = root / CACHE_DIR_NAME
    if target.is_dir() and dir_writable(target):
        return target
    if not target.exists() and dir_writable(root):
        return target
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pvdetect"


def fingerprint(records: Sequence[ChipRecord], band_order: Sequence[int] | None = None) -> str:
    """Hash of every file's path, size and mtime, the splits, the band order and the version."""
    items = []
    for r in records:
        row = [r.split, r.site, r.key]
        for p in (r.image, r.mask):
            try:
                st = p.stat()
            except OSError:
                raise DataError(f"{p}: file not found") from None
            row += [str(p.resolve()), st.st_size, st.st_mtime_ns]
        items.append(row)
    payload = json.dumps(
        [FORMAT_VERSION, list(band_order) if band_order is not None else None, items]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _dataset_id(records: Sequence[ChipRecord], band_order: Sequence[int] | None) -> str:
    """Identity of a dataset across file changes: its folder and band order."""
    paths = [str(p.resolve().parent) for r in records for p in (r.image, r.mask)]
    root = os.path.commonpath(paths) if paths else ""
    payload = json.dumps([root, list(band_order) if band_order is not None else None])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_cache(
    records: Sequence[ChipRecord],
    cache_dir: Path | str | None = None,
    band_order: Sequence[int] | None = None,
) -> PackedCache:
    """Open the packed cache of ``records``, building it first if missing or stale.

    Args:
        records: Chips, e.g. from :func:`pvdetect.data.layouts.find_chips`.
        cache_dir: Parent folder of caches (default :func:`default_cache_dir`).
        band_order: 0-based source bands to pack as Red, Green, Blue, NIR (default: the file's
            bands as they are, which must then be exactly 4).

    Returns:
        The opened cache.

    Raises:
        DataError: A file is missing, unreadable or inconsistent with its partner.
        ConfigError: ``band_order`` is invalid.
        OutputError: The cache folder cannot be written.
    """
    records = list(records)
    if not records:
        raise DataError("packed cache: no chips given")
    order = _check_band_order(band_order)
    fp = fingerprint(records, order)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(records)

    def write(tmp: Path) -> None:
        _write_cache(tmp, records, order, fp, _dataset_id(records, order))

    return open_or_pack(base, fp, _dataset_id(records, order), write)


def open_or_pack(
    base: Path, fp: str, dataset_id: str, write: Callable[[Path], None]
) -> PackedCache:
    """Open the cache ``base/fp``, or build it with ``write(tmp)`` into a temporary folder that
    is renamed into place (then other caches of ``dataset_id`` are removed).

    Raises:
        OutputError: ``base`` cannot be written.
    """
    final = base / fp
    if final.is_dir():
        try:
            return PackedCache(final)
        except DataError as exc:
            log.warning("rebuilding packed cache: %s", exc)
            shutil.rmtree(final, ignore_errors=True)
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{fp}-", dir=base))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as shareable as its data
    except OSError as exc:
        raise OutputError(
            f"{base}: cannot create the packed cache ({exc.strerror or exc})"
        ) from None
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent build that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale(base, dataset_id, keep=fp)
    return PackedCache(final)


def _check_band_order(band_order: Sequence[int] | None) -> list[int] | None:
    if band_order is None:
        return None
    try:
        order = [operator.index(b) for b in band_order]
    except TypeError:
        raise ConfigError(
            f"band_order must be a list of 0-based band indices, got {band_order!r}"
        ) from None
    if not order or any(b < 0 for b in order):
        raise ConfigError(f"band_order must be non-negative 0-based indices, got {band_order!r}")
    return order


def _source_bands(info: RasterInfo, order: list[int] | None) -> list[int]:
    if order is None:
        if info.count != 4:
            raise DataError(
                f"{info.path}: image has {info.count} band(s); expected 4 (Red, Green, Blue, "
                f"NIR) or a band_order choosing them"
            )
        return [1, 2, 3, 4]
    if max(order) >= info.count:
        raise DataError(
            f"{info.path}: band_order {order} needs {max(order) + 1} bands, file has {info.count}"
        )
    return [b + 1 for b in order]


@dataclass
class ChipArrays:
    """One chip as it is packed.

    Attributes:
        image: float32 ``[C, h, w]`` raw reflectance, invalid pixels 0.
        mask: uint8 ``[h, w]``: 0/1, 255 = ignore.
        valid: bool ``[h, w]``.
        geometry: ``height``, ``width``, ``crs`` (WKT or None), ``transform`` (6 numbers),
            ``nodata`` of image and ``mask_nodata``.
    """

    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    geometry: dict


def _read_chip(rec: ChipRecord, bands: list[int]) -> ChipArrays:
    """Read, check and convert one image/mask pair."""
    img, info = read_raster(rec.image, bands=bands)
    m, minfo = read_raster(rec.mask)
    if minfo.count != 1:
        raise DataError(f"{rec.mask}: mask has {minfo.count} bands, expected 1")
    if (minfo.height, minfo.width) != (info.height, info.width):
        raise DataError(
            f"{rec.mask}: size {minfo.height}x{minfo.width} differs from image "
            f"{rec.image.name} {info.height}x{info.width}"
        )
    ok = valid_pixels(img, info.nodata_value)
    m = m[0]
    mnd = minfo.nodata_value
    labelled = ~(np.isnan(m) if math.isnan(mnd) else m == mnd)
    bad = labelled & (m != 0) & (m != 1)
    if bad.any():
        vals = ", ".join(f"{v:g}" for v in np.unique(m[bad])[:5])
        raise DataError(
            f"{rec.mask}: mask values outside {{0, 1, nodata {mnd:g}}}: {vals}; run pvdetect check"
        )
    img[:, ~ok] = 0.0
    target = np.where(ok & labelled, m, IGNORE_INDEX).astype(np.uint8)
    geometry = {
        "height": info.height,
        "width": info.width,
        "crs": info.crs.to_wkt() if info.crs is not None else None,
        "transform": list(info.transform)[:6],
        "nodata": info.nodata_value,
        "mask_nodata": mnd,
    }
    return ChipArrays(img, target, ok, geometry)


def _write_cache(
    tmp: Path, records: list[ChipRecord], order: list[int] | None, fp: str, ds_id: str
) -> None:
    infos = [raster_info(r.image) for r in records]
    bands = [_source_bands(info, order) for info in infos]
    shape = (
        len(records),
        len(bands[0]),
        max(i.height for i in infos),
        max(i.width for i in infos),
    )
    chips = (_read_chip(rec, b) for rec, b in zip(records, bands, strict=True))
    head = {"fingerprint": fp, "dataset_id": ds_id,
            "band_order": order if order is not None else [0, 1, 2, 3]}  # fmt: skip
    write_packed(tmp, records, shape, chips, head)


def write_packed(
    tmp: Path,
    records: Sequence[ChipRecord],
    shape: tuple[int, int, int, int],
    chips: Iterable[ChipArrays],
    head: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the arrays and ``meta.json`` of a cache into the folder ``tmp``.

    Args:
        tmp: The (temporary) cache folder.
        records: The chips, in order.
        shape: ``(N, C, H, W)``; smaller chips are padded with invalid pixels.
        chips: One :class:`ChipArrays` per record, in order.
        head: ``fingerprint``, ``dataset_id`` and ``band_order`` of the cache.
        extra: Further entries of ``meta.json`` (ignored when the cache is opened).
    """
    n, c, h, w = shape
    images = open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32, shape=(n, c, h, w))
    masks = open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, h, w))
    valid = open_memmap(tmp / "valid.npy", mode="w+", dtype=np.bool_, shape=(n, h, w))
    masks[:] = IGNORE_INDEX  # padding is ignore; images and valid start as 0 / False
    geometry: list[dict] = []
    pv = np.zeros(n, np.float64)
    for i, chip in enumerate(chips):
        ih, iw = chip.mask.shape
        images[i, :, :ih, :iw] = chip.image
        masks[i, :ih, :iw] = chip.mask
        valid[i, :ih, :iw] = chip.valid
        n_lab = int((chip.mask != IGNORE_INDEX).sum())
        pv[i] = float((chip.mask == 1).sum()) / n_lab if n_lab else 0.0
        geometry.append(chip.geometry)
    if len(geometry) != n:
        raise DataError(f"packed cache: {len(geometry)} chips written, {n} expected")
    for arr in (images, masks, valid):
        arr.flush()
    train = [i for i, r in enumerate(records) if r.split == "train"]
    if not train:
        log.warning("packed cache: no training chips; band statistics use all chips")
        train = list(range(len(records)))
    stats = band_stats(images, valid, train, where=str(records[train[0]].image.parent))
    del images, masks, valid
    meta = {
        "format_version": FORMAT_VERSION,
        **head,
        "shape": [n, c, h, w],
        "records": [
            {
                "image": str(r.image),
                "mask": str(r.mask),
                "split": r.split,
                "site": r.site,
                "key": r.key,
            }
            for r in records
        ],  # fmt: skip
        "chips": geometry,
        "pv_fraction": pv.tolist(),
        "stats": stats.to_dict(),
        **(extra or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": True,
    }
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _remove_stale(base: Path, ds_id: str, keep: str) -> None:
    """Remove other caches of the same dataset and abandoned temporary folders."""
    now = time.time()
    for p in base.iterdir():
        if not p.is_dir() or p.name == keep:
            continue
        if p.name.startswith(_TMP_PREFIX):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            continue
        try:
            meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("dataset_id") == ds_id:
            log.info("removing stale packed cache %s", p)
            shutil.rmtree(p, ignore_errors=True)


def load_split(
    data_root: str | Path,
    split: str,
    *,
    band_order: Sequence[int] | None = None,
    cache_dir: Path | None = None,
) -> tuple[PackedCache, np.ndarray]:
    """Find the chips of a dataset, pack them, and return the cache with a split's indices.

    Raises:
        DataError: the dataset cannot be read or the split has no chips.
    """
    from pvdetect.data.layouts import find_chips

    root = Path(data_root)
    records = find_chips(root)
    cache = build_cache(records, cache_dir=cache_dir, band_order=band_order)
    idx = np.asarray(cache.indices(split), dtype=np.int64)
    if idx.size == 0:
        have = sorted({r.split for r in records})
        raise DataError(f"{root}: split '{split}' has no chips (splits found: {', '.join(have)})")
    return cache, idx

"""Packed chip cache: every chip decoded once into memory-mapped ``.npy`` arrays.

A cache lives in ``cache_dir/<fingerprint>/`` with ``images.npy`` (float32 ``[N, C, H, W]``, raw
reflectance, invalid pixels 0), ``masks.npy`` (uint8 ``[N, H, W]``, 0/1, 255 = ignore),
``valid.npy`` (bool ``[N, H, W]``) and ``meta.json`` (records, per-chip geometry, training
statistics). The fingerprint covers every file's path, size and mtime, the split assignment,
the band order, ``--offset``/``--scale`` when given, and the format version, so a changed file
gives a new cache and the stale one of the same dataset is removed. Values are stored as
reflectance x 10000: a chip whose metadata gives a scale or offset (``BOA_ADD_OFFSET``, see
:mod:`pvdetect.data.radiometry`) is corrected as it is packed. Caches are built in a temporary
folder and renamed into place, so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
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

from pvdetect.data.chips import IMAGE_BANDS, read_chip, source_bands
from pvdetect.data.layouts import dataset_root
from pvdetect.data.radiometry import RadiometryOptions, radiometry_for
from pvdetect.data.raster import (
    IGNORE_INDEX,
    raster_info,
)
from pvdetect.data.records import ChipRecord, dir_writable
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


def fingerprint(
    records: Sequence[ChipRecord],
    band_order: Sequence[int] | None = None,
    radiometry: RadiometryOptions | None = None,
) -> str:
    """Hash of every file's path, size and mtime, the splits, the band order, the
    ``--offset``/``--scale`` (only when given, so other fingerprints stay as they were) and the
    version."""
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
    parts: list = [FORMAT_VERSION, list(band_order) if band_order is not None else None, items]
    if radiometry is not None and radiometry.given:
        parts.append(radiometry.to_json())
    payload = json.dumps(parts)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _dataset_id(
    records: Sequence[ChipRecord],
    band_order: Sequence[int] | None,
    radiometry: RadiometryOptions | None = None,
) -> str:
    """Identity of a dataset across file changes: its folder, band order and radiometry."""
    paths = [str(p.resolve().parent) for r in records for p in (r.image, r.mask)]
    root = os.path.commonpath(paths) if paths else ""
    parts: list = [root, list(band_order) if band_order is not None else None]
    if radiometry is not None and radiometry.given:
        parts.append(radiometry.to_json())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def build_cache(
    records: Sequence[ChipRecord],
    cache_dir: Path | str | None = None,
    band_order: Sequence[int] | None = None,
    radiometry: RadiometryOptions | None = None,
) -> PackedCache:
    """Open the packed cache of ``records``, building it first if missing or stale.

    Args:
        records: Chips, e.g. from :func:`pvdetect.data.layouts.find_chips`.
        cache_dir: Parent folder of caches (default :func:`default_cache_dir`).
        band_order: 0-based source bands to pack as Red, Green, Blue, NIR (default: the file's
            bands as they are, which must then be exactly 4);
            :func:`pvdetect.data.bands.resolve_band_order` finds it from band names.
        radiometry: ``--offset``/``--scale`` for every chip (default: each chip's metadata).

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
    fp = fingerprint(records, order, radiometry)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(records)

    ds_id = _dataset_id(records, order, radiometry)

    def write(tmp: Path) -> None:
        _write_cache(tmp, records, order, fp, ds_id, radiometry)

    return open_or_pack(base, fp, ds_id, write)


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


@dataclass
class ChipArrays:
    """One chip as it is packed.

    Attributes:
        image: float32 ``[C, h, w]`` reflectance x 10000, invalid pixels 0.
        mask: uint8 ``[h, w]``: 0/1, 255 = ignore.
        valid: bool ``[h, w]``.
        geometry: ``height``, ``width``, ``crs`` (WKT or None), ``transform`` (6 numbers),
            ``nodata`` of image and ``mask_nodata``.
        rescaled: how stored values were rescaled (empty when they were not).
    """

    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    geometry: dict
    rescaled: str = ""


def _read_chip(
    rec: ChipRecord, order: list[int] | None, radiometry: RadiometryOptions | None
) -> ChipArrays:
    """Read, judge (:mod:`pvdetect.data.chips`' one rule set) and correct one chip."""
    chip = read_chip(rec, order)
    chip.raise_problems()
    for warning in chip.warnings:
        log.warning("%s", warning)
    info, ok = chip.image_info, chip.valid  # valid judged on the stored values
    assert info is not None and ok is not None and chip.image is not None
    assert chip.mask_info is not None
    rad = radiometry_for(info, source_bands(info, order) or [], radiometry)
    if not rad.identity:
        rad.apply(chip.image)
    geometry = {
        "height": info.height,
        "width": info.width,
        "crs": info.crs.to_wkt() if info.crs is not None else None,
        "transform": list(info.transform)[:6],
        "nodata": info.nodata_value,
        "mask_nodata": chip.mask_info.nodata_value,
    }
    image = np.where(ok[None], chip.image, np.float32(0.0))
    return ChipArrays(image, chip.target(), ok, geometry, "" if rad.identity else rad.describe())


def _write_cache(
    tmp: Path,
    records: list[ChipRecord],
    order: list[int] | None,
    fp: str,
    ds_id: str,
    radiometry: RadiometryOptions | None = None,
) -> None:
    infos = [raster_info(r.image) for r in records]
    for info, rec in zip(infos, records, strict=True):
        if source_bands(info, order) is None:
            read_chip(rec, order).raise_problems()
    c = len(order) if order is not None else IMAGE_BANDS
    shape = (len(records), c, max(i.height for i in infos), max(i.width for i in infos))
    chips = (_read_chip(rec, order, radiometry) for rec in records)
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
    corrected: dict[str, int] = {}  # chips whose values were rescaled, by how
    for i, chip in enumerate(chips):
        ih, iw = chip.mask.shape
        images[i, :, :ih, :iw] = chip.image
        masks[i, :ih, :iw] = chip.mask
        valid[i, :ih, :iw] = chip.valid
        n_lab = int((chip.mask != IGNORE_INDEX).sum())
        pv[i] = float((chip.mask == 1).sum()) / n_lab if n_lab else 0.0
        geometry.append(chip.geometry)
        if chip.rescaled:
            corrected[chip.rescaled] = corrected.get(chip.rescaled, 0) + 1
    if len(geometry) != n:
        raise DataError(f"packed cache: {len(geometry)} chips written, {n} expected")
    for arr in (images, masks, valid):
        arr.flush()
    for how, count in corrected.items():
        log.info("packed cache: values of %d of %d chips read as %s", count, n, how)
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

"""A dataset's chips ready to use: found, their bands chosen, packed, one split's indices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pvdetect.data.layouts import ChipRecord
from pvdetect.data.packed import PackedCache, build_cache
from pvdetect.data.radiometry import RadiometryOptions
from pvdetect.data.raster import raster_info
from pvdetect.errors import DataError

__all__ = ["choose_band_order", "load_split"]

log = logging.getLogger(__name__)


def load_split(
    data_root: str | Path,
    split: str,
    *,
    band_order: Sequence[int] | None = None,
    cache_dir: Path | None = None,
    bands: str | Sequence[str | int] | None = None,
    wanted: Sequence[str] | None = None,
    radiometry: RadiometryOptions | None = None,
) -> tuple[PackedCache, np.ndarray]:
    """Find the chips of a dataset, pack them, and return the cache with a split's indices.

    Args:
        data_root: the dataset.
        split: ``train``, ``val`` or ``test``.
        band_order: 0-based bands to pack when neither ``bands`` nor the first chip's band
            names choose them.
        cache_dir: parent folder of caches.
        bands: ``--bands`` (names or 1-based indices) for ``wanted``.
        wanted: band names in the model's order; with it, the first chip's bands are chosen by
            :func:`pvdetect.data.bands.resolve_bands`.
        radiometry: ``--offset``/``--scale``.

    Raises:
        DataError: the dataset cannot be read or the split has no chips.
    """
    from pvdetect.data.layouts import find_chips

    root = Path(data_root)
    records = find_chips(root)
    band_order = choose_band_order(records, band_order, bands, wanted)
    cache = build_cache(records, cache_dir=cache_dir, band_order=band_order, radiometry=radiometry)
    idx = np.asarray(cache.indices(split), dtype=np.int64)
    if idx.size == 0:
        have = sorted({r.split for r in records})
        raise DataError(f"{root}: split '{split}' has no chips (splits found: {', '.join(have)})")
    return cache, idx


def choose_band_order(
    records: Sequence[ChipRecord],
    band_order: Sequence[int] | None,
    bands: str | Sequence[str | int] | None,
    wanted: Sequence[str] | None,
) -> list[int] | None:
    """The 0-based bands to pack: chosen from the first chip by ``bands`` or by its band names
    (:func:`pvdetect.data.bands.resolve_bands`) when ``wanted`` is given, else ``band_order``.
    """
    from pvdetect.data.bands import resolve_bands

    if wanted is not None and records:
        first = raster_info(records[0].image)
        sel = resolve_bands(first, wanted, bands)
        if sel.source != "file order":
            identity = sel.indices == list(range(1, first.count + 1))
            log.info("chips: bands %s (%s)", ", ".join(sel.labels), sel.source)
            return None if identity else [i - 1 for i in sel.indices]
    return list(band_order) if band_order is not None else None

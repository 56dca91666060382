"""Synthetic chips packed straight into a cache: a training source without GeoTIFFs.

:func:`open_synthetic` fills a packed cache (the format of :mod:`pvdetect.data.packed`) from
:func:`pvdetect.synth.dataset.synthetic_chips`, in ``cache_dir`` or ``~/.cache/pvdetect``,
keyed by style, count, seed, chip size and a hash of the generator's code: the same arguments
give the same chips, and a changed generator a new cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pvdetect.data.layouts import ChipRecord
from pvdetect.data.packed import (
    FORMAT_VERSION,
    ChipArrays,
    PackedCache,
    open_or_pack,
    write_packed,
)
from pvdetect.data.raster import DEFAULT_NODATA, IGNORE_INDEX
from pvdetect.errors import ConfigError

__all__ = ["DEFAULT_SYNTH_SIZE", "open_synthetic"]

#: chip side of synthetic chips when no real dataset gives one (as ``pvdetect synth``)
DEFAULT_SYNTH_SIZE = 256


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

"""A small dataset in the ``images/`` + ``masks/`` folders layout, written with rasterio.

Every chip has a bright, low-NIR PV rectangle on vegetation (so a model or a threshold can find
it), a nodata corner in the image and an unlabelled column in the mask. File names are
``<site>_<k>.tif``, so the layout computes a site-grouped split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from pvdetect.data.raster import write_raster

ND = -9999.0


def write_folders_dataset(
    root: Path, sites: int = 6, per_site: int = 2, size: int = 48, seed: int = 0
) -> Path:
    """Write ``sites * per_site`` chips of ``size`` px under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for s in range(sites):
        for k in range(per_site):
            img = np.empty((4, size, size), np.float32)
            img[0] = rng.normal(500, 60, (size, size))  # red
            img[1] = rng.normal(700, 60, (size, size))  # green
            img[2] = rng.normal(400, 50, (size, size))  # blue
            img[3] = rng.normal(3500, 300, (size, size))  # NIR
            mask = np.zeros((1, size, size), np.float32)
            if (s + k) % 3:  # two chips in three hold PV
                y, x = rng.integers(4, size // 2, 2)
                h, w = rng.integers(6, size // 3, 2)
                img[:, y : y + h, x : x + w] = np.array([1100, 1000, 900, 1200])[:, None, None]
                mask[0, y : y + h, x : x + w] = 1
            img[:, :5, :5] = ND  # nodata corner
            mask[0, :, -2:] = ND  # unlabelled columns
            t = Affine(10, 0, 400_000 + 1000 * s, 0, -10, 5_300_000 - 1000 * k)
            name = f"site{s}_{k}.tif"
            write_raster(root / "images" / name, img, crs="EPSG:32633", transform=t, nodata=ND)
            write_raster(root / "masks" / name, mask, crs="EPSG:32633", transform=t, nodata=ND)
    return root


def write_two_layouts(base: Path) -> dict[str, Path]:
    """Two small datasets in different layouts under ``base``: ``brazil`` (10 chips of 64 px,
    the Solar-Plants-Brazil layout, from pvdetect synth) and ``folders`` (12 chips of 48 px),
    with ``cache`` for their packed caches and ``base`` itself."""
    from pvdetect.synth.dataset import generate_dataset

    brazil = base / "brazil_layout"
    generate_dataset(brazil, chips=10, scenes=0, seed=1, chip_size=64)
    folders = write_folders_dataset(base / "folders_layout", sites=6, per_site=2, size=48)
    return {"brazil": brazil, "folders": folders, "cache": base / "cache", "base": base}

"""``DIR/quicklook.png``: the whole map at a bounded size, plants outlined.

The probability mosaic is read decimated (GDAL takes the tiles' overview levels through the
VRT) and drawn in grey (black: no data, dark grey: probability 0, white: 1); plant outlines
are magenta, as in the scene overlays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.enums import Resampling

from pvdetect.inference.overlay import OUTLINE_RGB, png_bytes
from pvdetect.io import atomic_output
from pvdetect.mapping.grid import to_crs

__all__ = ["write_quicklook"]


def write_quicklook(
    mosaic: Path, dst: Path, plants: np.ndarray, plants_crs: str, max_side: int = 2048
) -> Path:
    """Write the quick-look of ``mosaic`` (a probability VRT) with ``plants`` outlined."""
    with rasterio.open(mosaic) as ds:
        h, w = ds.height, ds.width
        f = max(1.0, max(h, w) / max_side)
        oh, ow = max(1, round(h / f)), max(1, round(w / f))
        raw = ds.read(1, out_shape=(oh, ow), resampling=Resampling.nearest)
        nodata, scale = ds.nodata, ds.scales[0] or 1.0
        crs, transform = ds.crs, ds.transform
    valid = raw != nodata if nodata is not None else np.isfinite(raw)
    prob = np.clip(np.where(valid, raw.astype(np.float32) * scale, 0.0), 0.0, 1.0)
    grey = np.where(valid, 48 + prob * 207, 0).astype(np.uint8)
    img = np.repeat(grey[..., None], 3, axis=2)
    if len(plants):
        tr = pyproj.Transformer.from_crs(plants_crs, crs.to_wkt(), always_xy=True)
        geoms = to_crs(shapely.boundary(np.asarray(plants, dtype=object)), tr)
        t = transform @ Affine.scale(w / ow, h / oh)
        edge = rasterio.features.rasterize(
            ((g, 1) for g in geoms),
            out_shape=(oh, ow),
            transform=t,
            all_touched=True,
            dtype="uint8",
        ).astype(bool)
        img[edge] = OUTLINE_RGB
    with atomic_output(dst) as tmp:
        tmp.write_bytes(png_bytes(np.ascontiguousarray(img)))
    return dst

"""Pictures for the page's map: the imagery and the PV mask as PNGs in Web Mercator.

Leaflet places an image by its south-west and north-east corners and stretches it linearly in
its own projection (Web Mercator, EPSG:3857); a picture warped onto a Web Mercator grid
therefore lies exactly where it belongs, with no basemap needed. The warp reads through a
``WarpedVRT`` straight onto a grid of at most :data:`MAX_SIDE` pixels (averaging the imagery,
taking the maximum of the mask so that small plants stay visible), so a picture costs a few
reads of the overviews, whatever the area's size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.warp import transform as warp_transform

from pvdetect.data.raster import open_raster, valid_pixels
from pvdetect.inference.overlay import stretch
from pvdetect.io import atomic_output

__all__ = ["MASK_RGBA", "MAX_SIDE", "composite_layer", "mask_layer"]

WEB_MERCATOR = CRS.from_epsg(3857)
#: long side of a map picture, pixels
MAX_SIDE = 2048
#: colour of PV pixels in the mask picture
MASK_RGBA = (255, 0, 200, 170)


def _grid(ds, max_side: int) -> tuple[Affine, int, int, list[list[float]]]:
    """A Web Mercator grid over ``ds`` of at most ``max_side`` pixels, and its corners."""
    with warnings.catch_warnings():  # rasterio's own Affine product
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        t, w, h = calculate_default_transform(ds.crs, WEB_MERCATOR, ds.width, ds.height, *ds.bounds)
    scale = max(1.0, max(w, h) / max_side)
    w2, h2 = max(1, math.ceil(w / scale)), max(1, math.ceil(h / scale))
    t2 = t @ Affine.scale(w / w2, h / h2)
    xs = [t2.c, t2.c + t2.a * w2]
    ys = [t2.f + t2.e * h2, t2.f]
    lons, lats = warp_transform(WEB_MERCATOR, "EPSG:4326", xs, ys)
    return t2, w2, h2, [[lats[0], lons[0]], [lats[1], lons[1]]]


def _save_png(path: Path, rgba: np.ndarray) -> None:
    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(rgba, "RGBA").save(tmp, format="PNG", optimize=False, compress_level=6)


def composite_layer(
    src: Path, dst: Path, rgb: Sequence[int], max_side: int = MAX_SIDE
) -> list[list[float]]:
    """The imagery's RGB (2-98 % stretch, nodata transparent) as a PNG; returns its corners.

    Args:
        src: The area's raster.
        dst: PNG to write.
        rgb: 1-based bands of red, green and blue.
        max_side: Long side of the picture.

    Returns:
        ``[[south, west], [north, east]]`` in WGS 84 degrees.
    """
    with open_raster(src) as ds:
        nodata = ds.nodata if ds.nodata is not None else -9999.0
        t, w, h, corners = _grid(ds, max_side)
        with WarpedVRT(
            ds,
            crs=WEB_MERCATOR,
            transform=t,
            width=w,
            height=h,
            resampling=Resampling.average,
            nodata=nodata,
            dtype="float32",
        ) as vrt:
            data = vrt.read(list(rgb))
    valid = valid_pixels(data, nodata)
    rgba = np.zeros((h, w, 4), np.uint8)
    for i in range(3):
        rgba[..., i] = stretch(data[i], valid)
    rgba[..., 3] = np.where(valid, 255, 0)
    _save_png(dst, rgba)
    return corners


def mask_layer(src: Path, dst: Path, max_side: int = MAX_SIDE) -> list[list[float]]:
    """The PV mask (1 = PV) as a PNG, PV coloured and the rest transparent; returns its corners."""
    with open_raster(src) as ds:
        t, w, h, corners = _grid(ds, max_side)
        with WarpedVRT(
            ds,
            crs=WEB_MERCATOR,
            transform=t,
            width=w,
            height=h,
            resampling=Resampling.max,
            src_nodata=ds.nodata,
            nodata=ds.nodata,
        ) as vrt:
            data = vrt.read(1)
    pv = data == 1
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[pv] = MASK_RGBA
    _save_png(dst, rgba)
    return corners

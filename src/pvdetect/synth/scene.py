"""Large synthetic scenes: one landscape written block by block with its PV mask.

A scene is one :class:`~pvdetect.synth.landscape.Landscape` of ``size`` x ``size`` pixels
rendered in blocks of ``block_size``; since every pixel depends only on its world
coordinates, the pixels do not depend on the block size (no seams) and memory stays bounded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA, atomic_output, geotiff_profile
from pvdetect.errors import ConfigError
from pvdetect.synth.landscape import (
    PIXEL_SIZE,
    REGION_CRS,
    REGIONS,
    Landscape,
    new_landscape,
    render_window,
)
from pvdetect.synth.noise import stable_key
from pvdetect.synth.populate import PV_TARGET, corner_cut, mean_plant_area, populate

__all__ = ["MASK_NODATA", "SceneSummary", "generate_scene"]

MASK_NODATA = 255


@dataclass(frozen=True)
class SceneSummary:
    """What :func:`generate_scene` wrote."""

    image: Path
    mask: Path
    region: str
    size: int
    plants: int
    pv_fraction: float  # PV share of valid pixels
    nodata_fraction: float
    crs: str


def _scene_landscape(size: int, seed: int, region: str) -> tuple[Landscape, Affine]:
    """The populated landscape of a scene (one corner cut off as nodata) and its transform."""
    rng = np.random.default_rng([seed, 7, REGIONS.index(region)])
    land = new_landscape(region, rng, stable_key("scene", seed, region))
    area = float(size * size)
    max_area = 0.12 * area
    mean = mean_plant_area(max_area)
    n_plants = int(rng.poisson(PV_TARGET * area / mean))
    populate(land, rng, 0.0, 0.0, float(size), float(size), n_plants, max_area)
    land.cuts.append(corner_cut(rng, 0.0, 0.0, float(size), float(size), rng.uniform(0.04, 0.12)))
    if region == "brazil":
        east = 150_000 + 10 * int(rng.integers(0, 20_000)) + 400_000
        north = 8_200_000 - 10 * int(rng.integers(0, 20_000))
    else:
        east = 420_000 + 10 * int(rng.integers(0, 20_000))
        north = 5_400_000 - 10 * int(rng.integers(0, 10_000))
    transform = Affine(PIXEL_SIZE, 0.0, float(east), 0.0, -PIXEL_SIZE, float(north))
    return land, transform


def _write_blocks(
    land: Landscape,
    dst_img: rasterio.io.DatasetWriter,
    dst_mask: rasterio.io.DatasetWriter,
    size: int,
    block_size: int,
) -> tuple[int, int]:
    """Render and write the scene block by block; returns (PV pixels, valid pixels)."""
    pv = valid_n = 0
    for by in range(0, size, block_size):
        for bx in range(0, size, block_size):
            h = min(block_size, size - by)
            w = min(block_size, size - bx)
            img, label, valid = render_window(land, by, bx, h, w)
            mask = np.where(valid, label.astype(np.uint8), np.uint8(MASK_NODATA))
            win = Window(bx, by, w, h)
            dst_img.write(img, window=win)
            dst_mask.write(mask[None], window=win)
            pv += int(label.sum())
            valid_n += int(valid.sum())
    return pv, valid_n


def generate_scene(
    path_image: str | Path,
    path_mask: str | Path,
    size: int,
    seed: int,
    *,
    region: str = "brazil",
    block_size: int = 512,
) -> SceneSummary:
    """Write one ``size`` x ``size`` scene and its mask, block by block (bounded memory).

    Args:
        path_image: output image GeoTIFF (4 bands float32, nodata -9999).
        path_mask: output mask GeoTIFF (uint8 0/1, nodata 255), same grid.
        size: width and height in pixels (10 m).
        seed: random seed; the same seed and region give the same pixels for any block size.
        region: ``"brazil"`` (dry season, EPSG:31983) or ``"temperate"`` (EPSG:32633).
        block_size: rows and columns rendered at once.

    Returns:
        A :class:`SceneSummary`.
    """
    if region not in REGIONS:
        raise ConfigError(f"unknown region {region!r} (choose from {', '.join(REGIONS)})")
    if size < 16:
        raise ConfigError(f"scene size must be at least 16 px, got {size}")
    if block_size < 16:
        raise ConfigError(f"block size must be at least 16 px, got {block_size}")
    land, transform = _scene_landscape(size, seed, region)
    crs = CRS.from_user_input(REGION_CRS[region])
    grid = {"height": size, "width": size, "crs": crs, "transform": transform}
    img_profile = geotiff_profile(count=4, dtype="float32", nodata=DEFAULT_NODATA, **grid)
    mask_profile = geotiff_profile(count=1, dtype="uint8", nodata=MASK_NODATA, **grid)
    with atomic_output(path_image) as tmp_img, atomic_output(path_mask) as tmp_mask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with (
                rasterio.open(tmp_img, "w", **img_profile) as dst_img,
                rasterio.open(tmp_mask, "w", **mask_profile) as dst_mask,
            ):
                for i, name in enumerate(BAND_NAMES, start=1):
                    dst_img.set_band_description(i, name)
                dst_mask.set_band_description(1, "PV")
                pv, valid_n = _write_blocks(land, dst_img, dst_mask, size, block_size)
    return SceneSummary(
        image=Path(path_image),
        mask=Path(path_mask),
        region=region,
        size=size,
        plants=len(land.plants),
        pv_fraction=pv / max(1, valid_n),
        nodata_fraction=1.0 - valid_n / (size * size),
        crs=REGION_CRS[region],
    )

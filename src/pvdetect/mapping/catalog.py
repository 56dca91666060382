"""Imagery fetched per tile from a STAC catalog: ``pvdetect map --catalog``.

:class:`CatalogScenes` is a :class:`~pvdetect.mapping.sources.TileSource` whose ``read`` runs
the acquisition (:func:`pvdetect.acquire.pipeline.acquire`: search, cloud-masked median
composite) for the tile's raster on the worker: the request's grid is the tile's own (its UTM
CRS, its pixel size, pixel-aligned as the tiles are, over bounds that cover the cell and its
margins), so the tile is then cut from the composite by a window read, without resampling. The
composite lives in the tile's work folder and goes with it; nothing is fetched on the driver.
A tile where the catalog has no usable item in the date window is predicted as all nodata
(it counts as done, valid share 0). Every worker must reach the catalog and its assets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyproj
from rasterio.crs import CRS

from pvdetect.acquire.catalogs import Catalog
from pvdetect.acquire.composite import DEFAULT_MEMORY_MB
from pvdetect.acquire.pipeline import NoImageryError, acquire
from pvdetect.acquire.request import AcquireRequest
from pvdetect.data.raster import DEFAULT_NODATA
from pvdetect.errors import ConfigError
from pvdetect.mapping.grid import Tile
from pvdetect.mapping.sources import LocalScenes

__all__ = ["CatalogScenes"]


@dataclass(frozen=True)
class CatalogScenes:
    """Median composites of a STAC collection between two dates, one per tile.

    Attributes:
        catalog: the STAC API (see :func:`pvdetect.acquire.catalogs.resolve_catalog`).
        collection: the Sentinel-2 collection searched.
        start, end: the date window (both included).
        band_order: the bundle's bands (the composite holds Red, Green, Blue, NIR).
        in_channels: the bundle's input channels.
        max_items: items composited per tile at most (the least cloudy).
        memory_mb: memory budget of one tile's composite.
        nodata: nodata of the tile rasters.
    """

    catalog: Catalog
    collection: str
    start: date
    end: date
    band_order: tuple[str, ...]
    in_channels: int
    max_items: int = 60
    memory_mb: float = DEFAULT_MEMORY_MB
    nodata: float = DEFAULT_NODATA

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ConfigError(f"--start: {self.start} is after --end {self.end}")
        if self.max_items < 1:
            raise ConfigError(f"--max-items: must be at least 1, got {self.max_items}")
        if not self.memory_mb > 0:
            raise ConfigError(f"--memory-mb: must be positive, got {self.memory_mb:g}")

    def footprint(self) -> None:
        """The catalog may have imagery anywhere: the area of interest decides the tiles."""
        return None

    def for_tile(self, tile: Tile) -> CatalogScenes:
        """Every tile asks the catalog itself."""
        return self

    def describe(self) -> dict[str, Any]:
        """The catalog, collection and window (a resumed run must ask for the same)."""
        return {
            "kind": "catalog",
            "catalog": self.catalog.url,
            "collection": self.collection,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "max_items": self.max_items,
        }

    def request(self, tile: Tile) -> AcquireRequest:
        """The acquisition of the tile's raster: the tile's CRS and pixel size, its bounds."""
        to_ll = pyproj.Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
        bbox = to_ll.transform_bounds(*tile.raster_bounds, densify_pts=21)
        return AcquireRequest(
            catalog=self.catalog,
            collection=self.collection,
            bbox=tuple(bbox),
            point=None,
            size_km=None,
            start=self.start,
            end=self.end,
            name=tile.id,
            crs=CRS.from_epsg(tile.epsg),
            resolution=tile.res,
            max_items=self.max_items,
        )

    def read(self, tile: Tile, work_dir: Path) -> Path:
        """Acquire the tile's composite into ``work_dir`` and write the tile raster from it."""
        try:
            result = acquire(
                self.request(tile), Path(work_dir) / "acquire", memory_mb=self.memory_mb
            )
        except NoImageryError:  # nothing to see in the window: an all-nodata tile
            return LocalScenes((), self.band_order).read(tile, work_dir)
        scenes = LocalScenes.from_paths(
            [result.image], self.band_order, self.in_channels, self.nodata
        )
        return scenes.read(tile, work_dir)

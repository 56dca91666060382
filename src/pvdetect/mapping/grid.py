"""The fixed tile grid of a map: square cells in the UTM zone of each place, anchored at 0.

Every UTM zone (WGS 84, EPSG:326ZZ north of the equator, EPSG:327ZZ south of it) has its own
grid of square cells ``tile_km`` on a side: columns start at easting 0, rows at the equator
(northing 0 in the north, 10,000 km in the south, so the two hemispheres' rows meet at the
equator exactly). A cell is named ``<zone><N|S>_<column>_<row>`` (``22S_0641_1180``) and
depends only on ``tile_km``, so a resumed run, or another run over a neighbouring region with
the same ``tile_km``, finds the same tiles. Sentinel-2 scenes come in these UTM grids, so a
tile in a scene's zone reads its pixels without resampling whenever the scene is aligned to
the pixel size (as Sentinel-2 is at 10 m).

A tile owns its cell, less what lies outside its zone's 6 degree strip of longitude (a
neighbouring zone's tiles own that) and, with an area of interest, outside it: its
:attr:`Tile.owned` region. Each tile is predicted on its cell plus ``margin`` pixels on every
side (context for the network), and keeps only what falls in its owned region, so every place
of the area belongs to exactly one tile. Inside one zone the borders are grid lines (exact in
pixel coordinates); only the zone meridians and the area's outline are curves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyproj
import shapely
from affine import Affine
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pvdetect.errors import ConfigError

__all__ = [
    "EQUATOR_SOUTH",
    "Tile",
    "plan_tiles",
    "utm_epsg",
    "zone_of",
    "zone_strip",
]

#: northing of the equator in the southern UTM CRSs (EPSG:327ZZ)
EQUATOR_SOUTH = 10_000_000.0
#: UTM is defined between these latitudes (beyond: the polar UPS grids, not supported)
LAT_MIN, LAT_MAX = -80.0, 84.0
#: spacing (degrees) of the vertices along curved borders when moved between CRSs (~1 m)
DENSIFY_DEG = 1e-5


def zone_of(lon: float) -> int:
    """UTM zone (1..60) of a longitude (the regular 6 degree zones; no Norway exceptions)."""
    return min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))


def zone_strip(zone: int) -> tuple[float, float]:
    """West and east longitude of a zone."""
    west = -180.0 + 6.0 * (zone - 1)
    return west, west + 6.0


def utm_epsg(zone: int, south: bool) -> int:
    """EPSG code of WGS 84 / UTM zone ``zone`` north or south."""
    return (32700 if south else 32600) + zone


@dataclass(frozen=True)
class Tile:
    """One cell of the grid and the raster it is predicted on.

    Attributes:
        zone, south: the UTM zone and hemisphere (the tile's CRS).
        col, row: the cell's column (from easting 0) and row (from the equator, outwards).
        size_m: side of the cell in metres.
        res: pixel size in metres.
        margin: pixels predicted around the cell for context.
        owned_wkb: the part of the cell this tile owns (tile CRS), when not the whole cell.
    """

    zone: int
    south: bool
    col: int
    row: int
    size_m: float
    res: float
    margin: int
    owned_wkb: bytes | None = None

    @property
    def id(self) -> str:
        """Name of the tile, e.g. ``22S_0641_1180``."""
        return f"{self.zone:02d}{'S' if self.south else 'N'}_{self.col:04d}_{self.row:04d}"

    @property
    def epsg(self) -> int:
        """EPSG code of the tile's CRS."""
        return utm_epsg(self.zone, self.south)

    @property
    def crs(self) -> str:
        """The tile's CRS as ``EPSG:NNNNN``."""
        return f"EPSG:{self.epsg}"

    @property
    def cell_px(self) -> int:
        """Side of the cell in pixels."""
        return round(self.size_m / self.res)

    @property
    def size_px(self) -> int:
        """Side of the predicted raster (cell and margins) in pixels."""
        return self.cell_px + 2 * self.margin

    @property
    def cell_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the cell in the tile's CRS."""
        t = self.size_m
        x0 = self.col * t
        if self.south:
            y1 = EQUATOR_SOUTH - self.row * t
            return x0, y1 - t, x0 + t, y1
        y0 = self.row * t
        return x0, y0, x0 + t, y0 + t

    @property
    def transform(self) -> Affine:
        """Geotransform of the predicted raster (cell plus margins)."""
        x0, _, _, y1 = self.cell_bounds
        m = self.margin * self.res
        return Affine(self.res, 0.0, x0 - m, 0.0, -self.res, y1 + m)

    @property
    def raster_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the predicted raster in the tile's CRS."""
        x0, y0, x1, y1 = self.cell_bounds
        m = self.margin * self.res
        return x0 - m, y0 - m, x1 + m, y1 + m

    @property
    def owned(self) -> BaseGeometry:
        """The region this tile owns, in its CRS (the cell unless cut by a zone or the area)."""
        if self.owned_wkb is None:
            return box(*self.cell_bounds)
        return shapely.from_wkb(self.owned_wkb)

    @property
    def whole_cell(self) -> bool:
        """True when the tile owns its whole cell."""
        return self.owned_wkb is None


def _transformer(src: str | int, dst: str | int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def to_crs(geom: BaseGeometry, tr: pyproj.Transformer) -> BaseGeometry:
    """``geom`` moved through a pyproj transformer (x, y order)."""
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _zone_parts(area: BaseGeometry) -> Iterator[tuple[int, bool, BaseGeometry]]:
    """(zone, south, part of ``area`` in that zone and hemisphere), EPSG:4326."""
    minx, miny, maxx, maxy = area.bounds
    if miny < LAT_MIN or maxy > LAT_MAX:
        raise ConfigError(
            f"area {miny:.3f}..{maxy:.3f} degrees latitude reaches beyond UTM "
            f"({LAT_MIN:g}..{LAT_MAX:g})"
        )
    for zone in range(zone_of(minx), zone_of(maxx) + 1):
        west, east = zone_strip(zone)
        for south, (lat0, lat1) in ((False, (0.0, 90.0)), (True, (-90.0, 0.0))):
            part = shapely.intersection(area, box(west, lat0, east, lat1))
            if not part.is_empty and part.area > 0:
                yield zone, south, part


def _strip_region(zone: int, lat0: float, lat1: float, aoi: BaseGeometry | None) -> BaseGeometry:
    """What tiles of ``zone`` may own between two latitudes (EPSG:4326)."""
    west, east = zone_strip(zone)
    region = box(west, max(LAT_MIN, lat0), east, min(LAT_MAX, lat1))
    if aoi is not None:
        region = shapely.intersection(region, aoi)
    return region


def plan_tiles(
    area: BaseGeometry,
    tile_km: float,
    res: float,
    margin: int,
    aoi: BaseGeometry | None = None,
) -> list[Tile]:
    """The tiles of the grid that cover ``area``, sorted by id.

    Args:
        area: where to map, EPSG:4326 (the scenes' footprints, clipped to the area of
            interest when one is given).
        tile_km: side of a cell in km.
        res: pixel size in metres (the cell side must be a whole number of pixels).
        margin: pixels of context predicted around each cell.
        aoi: the area of interest (EPSG:4326): tiles own only what lies inside it.

    Raises:
        ConfigError: bad sizes, or an area beyond the UTM latitudes.
    """
    size_m = tile_km * 1000.0
    if not (res > 0 and size_m > 0):
        raise ConfigError(f"--tile-km {tile_km} and --resolution {res}: must be > 0")
    px = size_m / res
    if abs(px - round(px)) > 1e-6 or round(px) < 16:
        raise ConfigError(
            f"--tile-km {tile_km}: must be a whole number (>= 16) of {res:g} m pixels"
        )
    if margin < 0:
        raise ConfigError(f"--margin {margin}: must be >= 0")
    tiles: list[Tile] = []
    for zone, south, part in _zone_parts(area):
        tiles += _zone_tiles(zone, south, part, size_m, res, margin, aoi)
    return sorted(tiles, key=lambda t: t.id)


def _zone_tiles(
    zone: int,
    south: bool,
    part: BaseGeometry,
    size_m: float,
    res: float,
    margin: int,
    aoi: BaseGeometry | None,
) -> list[Tile]:
    """Cells of one zone and hemisphere that overlap ``part`` (EPSG:4326)."""
    to_utm = _transformer("EPSG:4326", utm_epsg(zone, south))
    part_utm = to_crs(shapely.segmentize(part, 1e-3), to_utm)
    minx, miny, maxx, maxy = part_utm.bounds
    base = EQUATOR_SOUTH if south else 0.0
    cols = range(math.floor(minx / size_m), math.floor(maxx / size_m) + 1)
    if south:
        rows = range(math.floor((base - maxy) / size_m), math.floor((base - miny) / size_m) + 1)
    else:
        rows = range(math.floor(miny / size_m), math.floor(maxy / size_m) + 1)
    proto = [Tile(zone, south, c, r, size_m, res, margin) for r in rows for c in cols]
    if not proto:
        return []
    cells = np.array([box(*t.cell_bounds) for t in proto], dtype=object)
    shapely.prepare(part_utm)
    hit = np.flatnonzero(shapely.intersects(part_utm, cells))
    # a cell must overlap the area by a pixel at least: a scene's edge on a grid line comes
    # back from EPSG:4326 a hair off the line
    hit = hit[shapely.area(shapely.intersection(cells[hit], part_utm)) >= 0.5 * res * res]
    chosen = [proto[i] for i in hit]
    if not chosen:
        return []
    # what the zone's tiles may own, in the zone's CRS, around the chosen cells
    lat_pad = 2 * size_m / 111_000.0 + 0.01
    region = _strip_region(zone, part.bounds[1] - lat_pad, part.bounds[3] + lat_pad, aoi)
    region_utm = to_crs(shapely.segmentize(region, DENSIFY_DEG * 100), to_utm)
    shapely.prepare(region_utm)
    out: list[Tile] = []
    for t in chosen:
        cell = box(*t.cell_bounds)
        if shapely.contains(region_utm, cell):
            out.append(t)
            continue
        owned = shapely.intersection(cell, region_utm)
        if owned.is_empty or owned.area <= 0:
            continue
        out.append(Tile(zone, south, t.col, t.row, size_m, res, margin, shapely.to_wkb(owned)))
    return out

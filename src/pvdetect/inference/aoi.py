"""An area of interest (``--aoi``): polygons that limit a prediction.

The AOI is read once (GeoJSON, GeoPackage or any vector format GDAL reads, every polygon of
every layer, any CRS; a GeoJSON without a CRS is in longitude/latitude, RFC 7946) and projected
onto each scene's CRS. Pixels outside it become nodata in the rasters (a pixel is inside when
its centre is), tiles that do not touch it are never predicted, and plants are clipped to it
(plants outside are dropped, plants crossing the border cut along it). The model still sees the
whole tile around the AOI's border, so predictions inside the AOI do not change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyproj
import shapely
from affine import Affine
from shapely.geometry import Polygon

from pvdetect.errors import DataError
from pvdetect.io import first_line

if TYPE_CHECKING:
    from pvdetect.inference.plants import AreaCalculator, Plant

__all__ = ["Aoi", "clip_plants", "inside_mask", "read_aoi", "tiles_touching"]

#: reprojected edges are first cut into pieces of at most this share of the AOI's extent
DENSIFY_SHARE = 1e-3


@dataclass(frozen=True)
class Aoi:
    """The union of the AOI's polygons in their own CRS."""

    path: Path
    geometry: shapely.Geometry
    crs: pyproj.CRS

    def in_crs(self, crs: object) -> shapely.Geometry:
        """The AOI in another CRS (edges densified first so they bend as they should)."""
        from pvdetect.data.raster import pyproj_crs

        dst = pyproj_crs(crs)
        if dst == self.crs:
            return self.geometry
        minx, miny, maxx, maxy = self.geometry.bounds
        step = max(maxx - minx, maxy - miny) * DENSIFY_SHARE
        geom = shapely.segmentize(self.geometry, step) if step > 0 else self.geometry
        out = _reproject(geom, self.crs, dst)
        if not np.isfinite(shapely.get_coordinates(out)).all():
            raise DataError(f"{self.path}: the area of interest cannot be projected to {dst.name}")
        return shapely.make_valid(out)


def _reproject(geom: shapely.Geometry, src: pyproj.CRS, dst: pyproj.CRS) -> shapely.Geometry:
    tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def read_aoi(path: str | os.PathLike) -> Aoi:
    """Read every polygon of a vector file into one AOI.

    Raises:
        DataError: missing or unreadable file, no polygons, or no CRS (other than GeoJSON).
    """
    import pyogrio
    import pyogrio.raw

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: area of interest not found")
    try:
        layers = pyogrio.list_layers(p)
    except Exception as exc:  # noqa: BLE001 - OGR raises many types
        raise DataError(f"{p}: not a readable vector file ({first_line(exc)})") from None
    parts: list[shapely.Geometry] = []
    crs: pyproj.CRS | None = None
    for name, _ in layers:
        try:
            meta, _, wkb, _ = pyogrio.raw.read(p, layer=name, columns=[])
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{p}: cannot read layer {name} ({first_line(exc)})") from None
        if wkb is None or not len(wkb):
            continue
        geoms = shapely.from_wkb(wkb)
        polys = [g for g in geoms if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]
        if not polys:
            continue
        layer_crs = _layer_crs(p, meta.get("crs"))
        if crs is not None and layer_crs != crs:
            polys = [_reproject(g, layer_crs, crs) for g in polys]
        crs = crs or layer_crs
        parts += polys
    if not parts or crs is None:
        raise DataError(f"{p}: area of interest holds no polygons")
    union = shapely.union_all(shapely.make_valid(np.array(parts, dtype=object)))
    if union.is_empty or union.area <= 0:
        raise DataError(f"{p}: area of interest has no area")
    return Aoi(p, union, crs)


def _layer_crs(path: Path, crs: str | None) -> pyproj.CRS:
    if crs:
        return pyproj.CRS.from_user_input(crs)
    if path.suffix.lower() in (".geojson", ".json"):
        return pyproj.CRS.from_epsg(4326)  # RFC 7946
    raise DataError(f"{path}: area of interest has no CRS")


def inside_mask(
    geom: shapely.Geometry, transform: Affine, row0: int, rows: int, width: int
) -> np.ndarray:
    """bool ``[rows, width]``: pixels of rows ``row0 ..`` whose centres are inside ``geom``."""
    import rasterio.features

    t = transform @ Affine.translation(0, row0)
    xs, ys = zip(*(t @ c for c in ((0, 0), (width, 0), (0, rows), (width, rows))), strict=True)
    part = shapely.clip_by_rect(geom, min(xs), min(ys), max(xs), max(ys))
    if part.is_empty:
        return np.zeros((rows, width), dtype=bool)
    return rasterio.features.geometry_mask(
        [part], out_shape=(rows, width), transform=t, invert=True
    )


def tiles_touching(
    geom: shapely.Geometry,
    transform: Affine,
    xs: list[int],
    ys: list[int],
    tile: int,
    size: tuple[int, int],
) -> tuple[tuple[int, ...], ...]:
    """Per tile row: the tile columns whose area (within the scene) touches ``geom``."""
    width, height = size
    boxes, index = [], []
    for r, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            x1, y1 = min(width, x0 + tile), min(height, y0 + tile)
            corners = [transform @ c for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
            boxes.append(shapely.Polygon(corners))
            index.append((r, j))
    shapely.prepare(geom)
    hits = shapely.intersects(geom, np.array(boxes, dtype=object))
    active: list[list[int]] = [[] for _ in ys]
    for (r, j), hit in zip(index, hits, strict=True):
        if hit:
            active[r].append(j)
    return tuple(tuple(a) for a in active)


def clip_plants(
    plants: list[Plant], geom: shapely.Geometry, areas: AreaCalculator, min_area_m2: float = 0.0
) -> list[Plant]:
    """Plants inside ``geom`` (same CRS): outside ones dropped, crossing ones cut along it.

    A plant cut into several pieces becomes several plants; pieces smaller than
    ``min_area_m2`` are dropped. Plants are numbered again from 1 in their order.
    """
    from pvdetect.inference.plants import Plant

    shapely.prepare(geom)
    kept: list[tuple[Polygon, float, float, float]] = []
    for p in plants:
        if geom.contains(p.geometry):
            kept.append((p.geometry, p.area_m2, p.mean_prob, p.max_prob))
            continue
        if not geom.intersects(p.geometry):
            continue
        parts = [
            g
            for g in shapely.get_parts(shapely.intersection(p.geometry, geom))
            if isinstance(g, Polygon) and g.area > 0
        ]
        if not parts:
            continue
        part_areas = areas.crs_areas_m2(np.array(parts, dtype=object))
        for g, a in zip(parts, part_areas, strict=True):
            if a >= min_area_m2:
                kept.append((g, float(a), p.mean_prob, p.max_prob))
    return [Plant(i + 1, g, a, mean, peak) for i, (g, a, mean, peak) in enumerate(kept)]

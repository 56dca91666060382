"""One plant layer from every tile's pieces: plants cut by tile or zone borders become one.

Every place belongs to exactly one tile (:mod:`pvdetect.mapping.grid`), and each tile keeps
only the part of each plant that lies in its region, so nothing is counted twice: a plant seen
in two overlapping scenes was predicted once, on the tile's composite. Pieces flagged ``edge``
(they touch their tile's border) are merged:

1. per UTM zone, in the zone's coordinates (the south CRS's northings less 10,000 km, exact
   for a grid in metres): tile borders are grid lines, pieces of one plant share their edges
   exactly and their union is one polygon;
2. across zones, in EPSG:4326: pieces cut at a zone meridian are snapped onto it (vertices
   within :data:`SNAP_DEG` of it) and joined there.

A merged plant's ``area_m2`` is the sum of its pieces' areas (each measured in an equal-area
projection by :class:`~pvdetect.inference.plants.AreaCalculator`), ``mean_prob`` their
area-weighted mean, ``max_prob`` their maximum, ``area_ha``, ``lon`` and ``lat`` (when the layer
has them) follow from the merged plant, and every other attribute comes from its largest
piece. Plants smaller than the minimum area are dropped after the merge. Plants are sorted
north-west first and numbered from 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyproj
import shapely

from pvdetect.errors import DataError
from pvdetect.mapping.grid import EQUATOR_SOUTH, Tile, to_crs, utm_epsg, zone_strip
from pvdetect.mapping.pieces import Pieces, read_pieces
from pvdetect.mapping.tasks import tile_files

__all__ = ["SNAP_DEG", "combine", "concat", "merge_tiles"]

#: pieces cut at a zone meridian end within this many degrees of it (~1 cm)
SNAP_DEG = 1e-7
WGS84 = "EPSG:4326"


def concat(parts: Sequence[Pieces]) -> Pieces:
    """Pieces of several tiles in one table (columns matched by name)."""
    parts = [p for p in parts]
    if not parts:
        return Pieces(np.array([], object), [], [])
    names = parts[0].names
    for p in parts[1:]:
        if p.names != names:
            raise DataError(f"tile plant layers differ in their columns: {p.names} != {names}")
    geoms = np.concatenate([p.geoms for p in parts]) if parts else np.array([], object)
    cols = [np.concatenate([p.columns[i] for p in parts]) for i in range(len(names))]
    edge = np.concatenate([p.edge for p in parts])
    return Pieces(np.asarray(geoms, dtype=object), list(names), cols, edge)


def combine(table: Pieces, group: np.ndarray, geoms: np.ndarray) -> Pieces:
    """One row per group of ``table``'s rows (``group[i]`` = group of row i, 0..K-1).

    See the module docstring for how each attribute is combined; ``geoms`` are the groups'
    geometries.
    """
    k = len(geoms)
    area = table.area_m2()
    total = np.bincount(group, weights=area, minlength=k)
    order = np.lexsort((-area, group))
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    largest = order[starts]
    out = Pieces(np.asarray(geoms, dtype=object), list(table.names),
                 [c[largest].copy() for c in table.columns])  # fmt: skip
    rows = np.arange(k)
    out.set("area_m2", rows, np.round(total, 2))
    out.set("area_ha", rows, np.round(total / 10000.0, 4))
    mean = table.column("mean_prob")
    if mean is not None:
        m = mean.astype(np.float64)
        ok = np.isfinite(m)
        num = np.bincount(group[ok], weights=(area * m)[ok], minlength=k)
        den = np.bincount(group[ok], weights=area[ok], minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.set("mean_prob", rows, np.where(den > 0, num / den, np.nan))
    peak = table.column("max_prob")
    if peak is not None:
        p = np.where(np.isfinite(peak.astype(np.float64)), peak, -np.inf)
        best = np.full(k, -np.inf)
        np.maximum.at(best, group, p)
        out.set("max_prob", rows, np.where(np.isfinite(best), best, np.nan))
    return out


def _union_groups(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of polygons: (parts, part index of each input polygon)."""
    union = shapely.union_all(geoms)
    parts = np.array(
        [p for p in shapely.get_parts(union) if p.geom_type == "Polygon" and not p.is_empty],
        dtype=object,
    )
    tree = shapely.STRtree(parts)
    probe = shapely.point_on_surface(geoms)
    src, dst = tree.query(probe, predicate="intersects")
    group = np.full(len(geoms), -1, dtype=np.int64)
    group[src[::-1]] = dst[::-1]  # the first hit of each input
    lost = np.flatnonzero(group < 0)
    for i in lost:  # a degenerate piece whose point fell on a border: nearest part
        group[i] = int(tree.query_nearest(geoms[i])[0])
    parts = np.array([shapely.simplify(p, 0.0) for p in parts], dtype=object)
    return parts, group


def _merge(table: Pieces) -> Pieces:
    """Merge the rows of ``table`` whose geometries touch or overlap."""
    if len(table) == 0:
        return table
    parts, group = _union_groups(table.geoms)
    used = np.unique(group)
    remap = np.full(len(parts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return combine(table, remap[group], parts[used])


def _shift_north(geoms: np.ndarray) -> np.ndarray:
    """Southern UTM coordinates as northern ones (northing less 10,000 km)."""
    return shapely.transform(
        geoms, lambda xy: np.column_stack([xy[:, 0], xy[:, 1] - EQUATOR_SOUTH])
    )


def _snap_meridians(geoms: np.ndarray, meridians: Sequence[float]) -> np.ndarray:
    def fn(xy: np.ndarray) -> np.ndarray:
        x = xy[:, 0].copy()
        for lon in meridians:
            x[np.abs(x - lon) < SNAP_DEG] = lon
        return np.column_stack([x, xy[:, 1]])

    snapped = shapely.transform(geoms, fn)
    bad = ~shapely.is_valid(snapped)
    if bad.any():
        snapped[bad] = shapely.make_valid(snapped[bad])
    return snapped


def _near_meridian(geoms: np.ndarray, zone: int) -> np.ndarray:
    west, east = zone_strip(zone)
    b = shapely.bounds(geoms)
    return (b[:, 0] - west < 10 * SNAP_DEG) | (east - b[:, 2] < 10 * SNAP_DEG)


def _tile_tables(out: Path, tiles: Sequence[Tile]) -> tuple[list[Pieces], dict[int, list[Pieces]]]:
    """Closed pieces (EPSG:4326) and, per zone, edge pieces (zone's northern coordinates)."""
    closed: list[Pieces] = []
    edges: dict[int, list[Pieces]] = {}
    to_ll: dict[int, pyproj.Transformer] = {}
    for tile in tiles:
        p = read_pieces(tile_files(out, tile.id)["plants"])
        if not len(p):
            continue
        tr = to_ll.setdefault(
            tile.epsg, pyproj.Transformer.from_crs(tile.epsg, WGS84, always_xy=True)
        )
        c = p.take(np.flatnonzero(~p.edge))
        if len(c):
            c.geoms = np.asarray(to_crs(c.geoms, tr), dtype=object)
            closed.append(c)
        e = p.take(np.flatnonzero(p.edge))
        if len(e):
            if tile.south:
                e.geoms = _shift_north(e.geoms)
            edges.setdefault(tile.zone, []).append(e)
    return closed, edges


def merge_tiles(
    out: Path, tiles: Sequence[Tile], out_crs: str, min_area_m2: float
) -> tuple[Pieces, str]:
    """Every plant of the map, in ``out_crs``; returns them and the CRS as WKT."""
    closed, edges = _tile_tables(Path(out), tiles)
    final: list[Pieces] = list(closed)
    crossing: list[Pieces] = []
    meridians: set[float] = set()
    for zone, tables in sorted(edges.items()):
        merged = _merge(concat(tables))
        tr = pyproj.Transformer.from_crs(utm_epsg(zone, False), WGS84, always_xy=True)
        merged.geoms = np.asarray(to_crs(merged.geoms, tr), dtype=object)
        near = _near_meridian(merged.geoms, zone)
        final.append(merged.take(np.flatnonzero(~near)))
        if near.any():
            crossing.append(merged.take(np.flatnonzero(near)))
            meridians.update(zone_strip(zone))
    if crossing:
        table = concat(crossing)
        table.geoms = _snap_meridians(table.geoms, sorted(meridians))
        final.append(_merge(table))
    plants = concat([t for t in final if len(t)]) if any(len(t) for t in final) else None
    if plants is None:
        template = closed[0] if closed else next(iter(edges.values()), [None])[0]
        names = template.names if template is not None else []
        cols = [c[:0] for c in template.columns] if template is not None else []
        plants = Pieces(np.array([], object), list(names), cols)
    plants = _finish(plants, min_area_m2)
    crs = pyproj.CRS.from_user_input(out_crs)
    if len(plants) and not crs.equals(pyproj.CRS.from_epsg(4326)):
        tr = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True)
        plants.geoms = np.asarray(to_crs(plants.geoms, tr), dtype=object)
    return plants, crs.to_wkt()


def _finish(plants: Pieces, min_area_m2: float) -> Pieces:
    """Drop small plants, sort north-west first, number from 1, place lon/lat (EPSG:4326)."""
    if not len(plants):
        return plants
    plants = plants.take(np.flatnonzero(plants.area_m2() >= min_area_m2))
    if not len(plants):
        return plants
    b = shapely.bounds(plants.geoms)
    order = np.lexsort((b[:, 0], -b[:, 3]))
    plants = plants.take(order)
    rows = np.arange(len(plants))
    plants.set("id", rows, rows + 1)
    if plants.column("lon") is not None or plants.column("lat") is not None:
        c = shapely.centroid(plants.geoms)
        plants.set("lon", rows, shapely.get_x(c))
        plants.set("lat", rows, shapely.get_y(c))
    return plants

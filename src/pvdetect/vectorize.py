"""Polygons of PV plants from a binary mask raster, with areas in an equal-area projection.

The mask is read and polygonised in horizontal strips so memory does not grow with the scene
height. Polygons are built in pixel coordinates (exact integers), so pieces of one plant cut by
a strip border share their edges exactly and a union joins them into one polygon. Pixels are
4-connected: two plants that touch only at a corner stay two plants.

Areas are computed in a Lambert azimuthal equal-area projection centred on the raster, which is
accurate to well below 0.1 % over a Sentinel-2 tile, whatever the raster's CRS (UTM or
geographic). Holes smaller than ``max_hole_m2`` are filled before the area is measured and the
``min_area_m2`` filter applied; per-plant ``mean_prob`` and ``max_prob`` come from the
probability raster (pixels inside the reported polygon, nodata excluded).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon, shape

from pvdetect.data.raster import DEFAULT_NODATA, atomic_output, open_raster
from pvdetect.errors import DataError, OutputError

#: mask value of PV pixels; 0 = background, 255 = nodata
PV_VALUE = 1
DEFAULT_MIN_AREA_M2 = 1000.0
DEFAULT_MAX_HOLE_M2 = 10000.0
FIELDS = ("id", "area_m2", "area_ha", "mean_prob", "max_prob")


@dataclass(frozen=True)
class Plant:
    """One detected PV plant.

    Attributes:
        id: 1-based number, in order of the plants' top-left corner.
        geometry: polygon in the CRS of the raster.
        area_m2: area in square metres (equal-area projection).
        mean_prob: mean PV probability of the pixels inside the polygon (NaN without a prob
            raster).
        max_prob: maximum PV probability inside the polygon (NaN without a prob raster).
    """

    id: int
    geometry: Polygon
    area_m2: float
    mean_prob: float
    max_prob: float

    @property
    def area_ha(self) -> float:
        """Area in hectares."""
        return self.area_m2 / 10000.0


def equal_area_crs(crs: object, bounds: Sequence[float]) -> pyproj.CRS:
    """Lambert azimuthal equal-area CRS centred on ``bounds`` (minx, miny, maxx, maxy)."""
    src = _pyproj_crs(crs)
    cx, cy = (bounds[0] + bounds[2]) / 2.0, (bounds[1] + bounds[3]) / 2.0
    to_ll = pyproj.Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(cx, cy)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise DataError(f"cannot place an equal-area projection at ({cx}, {cy}) in {src.name}")
    return pyproj.CRS.from_proj4(
        f"+proj=laea +lat_0={lat:.8f} +lon_0={lon:.8f} +x_0=0 +y_0=0 +datum=WGS84 +units=m"
    )


def _pyproj_crs(crs: object) -> pyproj.CRS:
    if isinstance(crs, pyproj.CRS):
        return crs
    to_wkt = getattr(crs, "to_wkt", None)
    return pyproj.CRS.from_wkt(to_wkt()) if callable(to_wkt) else pyproj.CRS.from_user_input(crs)


class AreaCalculator:
    """Areas in m2 of geometries given in pixel coordinates of a raster grid."""

    def __init__(self, crs: object, transform: Affine, width: int, height: int) -> None:
        self.transform = transform
        xs, ys = _affine(
            transform, np.array([0.0, width, 0.0, width]), np.array([0.0, 0.0, height, height])
        )
        bounds = (xs.min(), ys.min(), xs.max(), ys.max())
        self.ea_crs = equal_area_crs(crs, bounds)
        self._to_ea = pyproj.Transformer.from_crs(_pyproj_crs(crs), self.ea_crs, always_xy=True)

    def to_crs(self, geoms: np.ndarray | shapely.Geometry) -> np.ndarray | shapely.Geometry:
        """Pixel coordinates -> raster CRS."""
        t = self.transform
        return shapely.transform(geoms, lambda xy: np.column_stack(_affine(t, xy[:, 0], xy[:, 1])))

    def areas_m2(self, geoms_px: np.ndarray | shapely.Geometry) -> np.ndarray:
        """Equal-area areas (m2) of pixel-coordinate geometries."""
        t = self.transform

        def fn(xy: np.ndarray) -> np.ndarray:
            x, y = _affine(t, xy[:, 0], xy[:, 1])
            ex, ey = self._to_ea.transform(x, y)
            return np.column_stack([ex, ey])

        # densify so that curved edges of a geographic grid are followed closely
        dense = shapely.segmentize(geoms_px, 16.0)
        return np.asarray(shapely.area(shapely.transform(dense, fn)), dtype=np.float64)


def _affine(t: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _strip_polygons(
    pv: np.ndarray, row0: int, height: int, connectivity: int
) -> tuple[list[Polygon], list[Polygon]]:
    """Polygons (pixel coordinates) of one strip: (closed, touching an inner strip border)."""
    closed: list[Polygon] = []
    open_: list[Polygon] = []
    if not pv.any():
        return closed, open_
    row1 = row0 + pv.shape[0]
    data = pv.astype(np.uint8)
    for geom, _ in rasterio.features.shapes(
        data, mask=pv, connectivity=connectivity, transform=Affine.translation(0, row0)
    ):
        poly = shape(geom)
        _, miny, _, maxy = poly.bounds
        touches = (row0 > 0 and miny <= row0) or (row1 < height and maxy >= row1)
        (open_ if touches else closed).append(poly)
    return closed, open_


def polygonize_mask(
    mask_path: str | os.PathLike,
    *,
    strip_rows: int = 1024,
    connectivity: int = 4,
    keep: Callable[[list[Polygon]], np.ndarray] | None = None,
) -> list[Polygon]:
    """Polygons of the PV pixels (value 1) of a mask raster, in pixel coordinates.

    The raster is read in strips of ``strip_rows`` rows; plants cut by strip borders are merged.
    ``keep`` (polygons -> bool array) filters complete polygons as soon as they are found, so
    that specks never accumulate in memory; pieces cut by strip borders are filtered after
    merging.
    """
    path = Path(mask_path)
    closed: list[Polygon] = []
    open_: list[Polygon] = []
    with open_raster(path) as ds:
        height, width = ds.height, ds.width
        for row0 in range(0, height, strip_rows):
            rows = min(strip_rows, height - row0)
            try:
                m = ds.read(1, window=Window(0, row0, width, rows))
            except Exception as exc:  # noqa: BLE001 - GDAL raises many types
                raise DataError(f"{path}: cannot read mask pixels ({exc})") from None
            c, o = _strip_polygons(m == PV_VALUE, row0, height, connectivity)
            if keep is not None and c:
                c = [p for p, k in zip(c, keep(c), strict=True) if k]
            closed += c
            open_ += o
    merged: list[Polygon] = []
    if open_:
        union = shapely.union_all(np.array(open_, dtype=object))
        merged = [shapely.simplify(p, 0.0) for p in shapely.get_parts(union)]
    merged = [p for p in merged if isinstance(p, Polygon) and not p.is_empty]
    if keep is not None and merged:
        merged = [p for p, k in zip(merged, keep(merged), strict=True) if k]
    polys = closed + merged
    polys.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    return polys


def fill_holes(
    polys_px: Sequence[Polygon], areas: AreaCalculator, max_hole_m2: float
) -> list[Polygon]:
    """Remove interior rings smaller than ``max_hole_m2`` (0 keeps all holes, inf fills all)."""
    out: list[Polygon] = []
    for p in polys_px:
        if not p.interiors or max_hole_m2 <= 0:
            out.append(p)
            continue
        rings = list(p.interiors)
        if math.isinf(max_hole_m2):
            keep: list = []
        else:
            hole_areas = areas.areas_m2(np.array([Polygon(r) for r in rings], dtype=object))
            keep = [r for r, a in zip(rings, hole_areas, strict=True) if a >= max_hole_m2]
        out.append(Polygon(p.exterior, keep))
    return out


def polygon_prob_stats(
    prob_path: str | os.PathLike, polys_px: Sequence[Polygon], strip_rows: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max probability inside each pixel-coordinate polygon (NaN if no valid pixel).

    A pixel is inside when its centre is. The raster is read once, in strips of
    ``strip_rows``; in each strip all polygons are burnt in at once with their numbers and the
    sums and maxima gathered per number. Polygons whose interiors overlap another polygon's (a
    plant inside another's filled hole) cannot share one burnt-in raster and are measured one
    by one instead.
    """
    n = len(polys_px)
    means = np.full(n, np.nan)
    maxes = np.full(n, np.nan)
    if n == 0:
        return means, maxes
    path = Path(prob_path)
    geoms = np.asarray(polys_px, dtype=object)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    pairs = a != b
    a, b = a[pairs], b[pairs]
    nested = np.zeros(n, dtype=bool)
    if a.size:
        inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
        nested[a[inter > 0]] = True
    bounds = shapely.bounds(geoms)  # minx, miny, maxx, maxy in pixels
    sums = np.zeros(n + 1)
    counts = np.zeros(n + 1)
    peak = np.full(n + 1, -np.inf)
    with open_raster(path) as ds:
        nodata = ds.nodata if ds.nodata is not None else DEFAULT_NODATA
        height, width = ds.height, ds.width

        def read(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
            try:
                return ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            except Exception as exc:  # noqa: BLE001 - GDAL raises many types
                raise DataError(f"{path}: cannot read probability pixels ({exc})") from None

        flat = np.flatnonzero(~nested)
        for r0 in range(0, height, strip_rows):
            r1 = min(height, r0 + strip_rows)
            here = flat[(bounds[flat, 1] < r1) & (bounds[flat, 3] > r0)]
            if here.size == 0:
                continue
            prob = read(0, r0, width, r1)
            ids = rasterio.features.rasterize(
                ((geoms[i], int(i) + 1) for i in here),
                out_shape=prob.shape,
                transform=Affine.translation(0, r0),
                fill=0,
                dtype="int32",
            )
            sel = (ids > 0) & (prob != nodata) & np.isfinite(prob)
            k, v = ids[sel], prob[sel].astype(np.float64)
            sums += np.bincount(k, weights=v, minlength=n + 1)
            counts += np.bincount(k, minlength=n + 1)
            np.maximum.at(peak, k, v)
        for i in np.flatnonzero(nested):
            minx, miny, maxx, maxy = bounds[i]
            c0, r0 = max(0, math.floor(minx)), max(0, math.floor(miny))
            c1, r1 = min(width, math.ceil(maxx)), min(height, math.ceil(maxy))
            if c1 <= c0 or r1 <= r0:
                continue
            prob = read(c0, r0, c1, r1)
            inside = rasterio.features.geometry_mask(
                [geoms[i]], out_shape=prob.shape, transform=Affine.translation(c0, r0), invert=True
            )
            vals = prob[inside & (prob != nodata) & np.isfinite(prob)].astype(np.float64)
            if vals.size:
                sums[i + 1], counts[i + 1], peak[i + 1] = vals.sum(), vals.size, vals.max()
    ok = counts[1:] > 0
    means[ok] = sums[1:][ok] / counts[1:][ok]
    maxes[ok] = peak[1:][ok]
    return means, maxes


def vectorize_mask(
    mask_path: str | os.PathLike,
    prob_path: str | os.PathLike | None = None,
    *,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    max_hole_m2: float = DEFAULT_MAX_HOLE_M2,
    strip_rows: int = 1024,
    connectivity: int = 4,
) -> list[Plant]:
    """Plants from a binary mask raster (1 = PV, 0 = not, 255 = nodata).

    Args:
        mask_path: the mask GeoTIFF (must have a CRS and transform).
        prob_path: probability GeoTIFF on the same grid, for ``mean_prob``/``max_prob``.
        min_area_m2: drop plants smaller than this (after hole filling).
        max_hole_m2: fill interior holes smaller than this.
        strip_rows: rows read and polygonised at a time (bounds memory).
        connectivity: 4 or 8 pixel connectivity.

    Returns:
        Plants sorted by their top-left corner, numbered from 1.
    """
    path = Path(mask_path)
    with open_raster(path) as ds:
        crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
    if crs is None:
        raise DataError(f"{path}: no CRS; cannot compute plant areas")
    areas = AreaCalculator(crs, transform, width, height)

    def big_enough(polys: list[Polygon]) -> np.ndarray:
        # the area with every hole filled bounds the final area from above
        shells = np.array([Polygon(p.exterior) for p in polys], dtype=object)
        return areas.areas_m2(shells) >= min_area_m2

    polys = polygonize_mask(
        path,
        strip_rows=strip_rows,
        connectivity=connectivity,
        keep=big_enough if min_area_m2 > 0 else None,
    )
    if not polys:
        return []
    polys = fill_holes(polys, areas, max_hole_m2)
    a = areas.areas_m2(np.array(polys, dtype=object))
    keep = a >= min_area_m2
    polys = [p for p, k in zip(polys, keep, strict=True) if k]
    a = a[keep]
    if prob_path is not None and polys:
        means, maxes = polygon_prob_stats(prob_path, polys)
    else:
        means = maxes = np.full(len(polys), np.nan)
    geoms = areas.to_crs(np.array(polys, dtype=object)) if polys else []
    return [
        Plant(i + 1, g, float(ar), float(mn), float(mx))
        for i, (g, ar, mn, mx) in enumerate(zip(geoms, a, means, maxes, strict=True))
    ]


def write_plants(
    path: str | os.PathLike,
    plants: Sequence[Plant],
    crs: object,
    *,
    driver: str = "GPKG",
    to_wgs84: bool = False,
) -> Path:
    """Write plants as a vector file (GPKG, or GeoJSON), atomically.

    Args:
        path: output file.
        plants: the plants (geometries in ``crs``).
        crs: CRS of the geometries.
        driver: OGR driver, "GPKG" or "GeoJSON".
        to_wgs84: reproject to EPSG:4326 (longitude, latitude) first, as GeoJSON expects.
    """
    import pyogrio.raw

    final = Path(path)
    src = _pyproj_crs(crs)
    geoms = np.array([p.geometry for p in plants], dtype=object)
    out_crs = src
    if to_wgs84:
        out_crs = pyproj.CRS.from_epsg(4326)
        if len(geoms):
            tr = pyproj.Transformer.from_crs(src, out_crs, always_xy=True)
            geoms = shapely.transform(
                geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
            )
    field_data = [
        np.array([p.id for p in plants], dtype=np.int64),
        np.array([round(p.area_m2, 2) for p in plants], dtype=np.float64),
        np.array([round(p.area_ha, 4) for p in plants], dtype=np.float64),
        np.array([p.mean_prob for p in plants], dtype=np.float64),
        np.array([p.max_prob for p in plants], dtype=np.float64),
    ]
    wkb = np.array(shapely.to_wkb(geoms), dtype=object) if len(geoms) else np.array([], object)
    layer_options = {"RFC7946": "YES"} if driver == "GeoJSON" else None
    with atomic_output(final) as tmp:
        try:
            pyogrio.raw.write(
                str(tmp),
                wkb,
                field_data,
                list(FIELDS),
                layer="plants",
                driver=driver,
                geometry_type="Polygon",
                crs=out_crs.to_wkt(),
                layer_options=layer_options,
            )
        except OSError as exc:
            raise OutputError(f"{final}: cannot write ({exc})") from None
    return final


def read_plants_count(path: str | os.PathLike) -> int:
    """Number of features in a vector file (helper for reports and tests)."""
    import pyogrio

    return int(pyogrio.read_info(str(path))["features"])


__all__ = [
    "AreaCalculator",
    "Plant",
    "equal_area_crs",
    "fill_holes",
    "polygon_prob_stats",
    "polygonize_mask",
    "vectorize_mask",
    "write_plants",
]

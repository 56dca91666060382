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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon, shape

from pvdetect.data.raster import DEFAULT_NODATA, open_raster
from pvdetect.errors import DataError
from pvdetect.inference.plants import AreaCalculator, Plant

#: mask value of PV pixels; 0 = background, 255 = nodata
PV_VALUE = 1
DEFAULT_MIN_AREA_M2 = 1000.0
DEFAULT_MAX_HOLE_M2 = 10000.0


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


def _merge_pieces(pieces: Sequence[Polygon]) -> list[Polygon]:
    """Union of polygon pieces cut by strip borders: one polygon per connected plant."""
    if not pieces:
        return []
    union = shapely.union_all(np.array(pieces, dtype=object))
    merged = [shapely.simplify(p, 0.0) for p in shapely.get_parts(union)]
    return [p for p in merged if isinstance(p, Polygon) and not p.is_empty]


def _read_rows(
    ds: rasterio.DatasetReader, path: Path, row0: int, rows: int, what: str
) -> np.ndarray:
    try:
        return ds.read(1, window=Window(0, row0, ds.width, rows))
    except Exception as exc:  # noqa: BLE001 - GDAL raises many types
        raise DataError(f"{path}: cannot read {what} pixels ({exc})") from None


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


#: reads the probability pixels of a window (col0, row0, col1, row1) of the grid
WindowReader = Callable[[int, int, int, int], np.ndarray]


def _compact_groups(bounds: np.ndarray, idx: np.ndarray, slack: float = 4.0) -> list[np.ndarray]:
    """Polygons ``idx`` in groups whose joint bounding box is small.

    Taken in order of their top row, a polygon joins the current group while the group's box
    stays within ``slack`` times the summed boxes of its members. Reading and burning in one
    window per group then touches few pixels that belong to no polygon.
    """
    groups: list[np.ndarray] = []
    members: list[int] = []
    box = np.zeros(4)
    total = 0.0
    for i in idx[np.argsort(bounds[idx, 1], kind="stable")]:
        b = bounds[i]
        area = max(1.0, (b[2] - b[0]) * (b[3] - b[1]))
        if members:
            joint = np.concatenate([np.minimum(box[:2], b[:2]), np.maximum(box[2:], b[2:])])
            if (joint[2] - joint[0]) * (joint[3] - joint[1]) <= slack * (total + area):
                members.append(int(i))
                box, total = joint, total + area
                continue
            groups.append(np.array(members))
        members, box, total = [int(i)], b.copy(), area
    if members:
        groups.append(np.array(members))
    return groups


#: per polygon: sum and count of the valid probabilities inside, and their maximum (-inf: none)
Sums = tuple[np.ndarray, np.ndarray, np.ndarray]


def _to_means(sums: Sums) -> tuple[np.ndarray, np.ndarray]:
    """(mean, max) per polygon from :data:`Sums`; NaN where no valid pixel was inside."""
    total, count, peak = sums
    ok = count > 0
    means = np.full(total.shape, np.nan)
    maxes = np.full(total.shape, np.nan)
    means[ok] = total[ok] / count[ok]
    maxes[ok] = peak[ok]
    return means, maxes


def _polygon_sums(
    polys_px: Sequence[Polygon],
    read: WindowReader,
    rows: tuple[int, int],
    width: int,
    nodata: float,
    strip_rows: int,
    grouped: bool = False,
) -> Sums:
    """Probability sums, counts and maxima inside each polygon, from grid rows ``rows``.

    A pixel is inside when its centre is. Only the window the polygons cover is read, in
    strips of ``strip_rows``; in each strip all polygons are burnt in at once with their
    numbers and the sums and maxima gathered per number. ``grouped`` splits the polygons into
    groups with compact windows first (:func:`_compact_groups`): fewer pixels read, for
    reading a compressed raster, at the price of one burn-in per group. Polygons whose
    interiors overlap another polygon's (a plant inside another's filled hole) cannot share one
    burnt-in raster and are measured one by one.
    """
    n = len(polys_px)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
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

    def burn(prob: np.ndarray, c0: int, r0: int, which: Iterable[int]) -> None:
        ids = rasterio.features.rasterize(
            ((geoms[i], int(i) + 1) for i in which),
            out_shape=prob.shape,
            transform=Affine.translation(c0, r0),
            fill=0,
            dtype="int32",
        )
        sel = (ids > 0) & (prob != nodata) & np.isfinite(prob)
        k, v = ids[sel], prob[sel].astype(np.float64)
        sums[:] += np.bincount(k, weights=v, minlength=n + 1)
        counts[:] += np.bincount(k, minlength=n + 1)
        np.maximum.at(peak, k, v)

    lo, hi = rows
    single = [np.array([i]) for i in np.flatnonzero(nested)]
    flat = np.flatnonzero(~nested)
    groups = _compact_groups(bounds, flat) if grouped else [flat] if flat.size else []
    for which in groups + single:
        # only the window the group covers, in strips: little to read and burn in, bounded memory
        c0 = max(0, math.floor(bounds[which, 0].min()))
        c1 = min(width, math.ceil(bounds[which, 2].max()))
        top = max(lo, math.floor(bounds[which, 1].min()))
        bottom = min(hi, math.ceil(bounds[which, 3].max()))
        if c1 <= c0:
            continue
        for r0 in range(top, bottom, strip_rows):
            r1 = min(bottom, r0 + strip_rows)
            here = which[(bounds[which, 1] < r1) & (bounds[which, 3] > r0)]
            if here.size:
                burn(read(c0, r0, c1, r1), c0, r0, here)
    return sums[1:], counts[1:], peak[1:]


def polygon_prob_sums(
    prob_path: str | os.PathLike, polys_px: Sequence[Polygon], strip_rows: int = 1024
) -> Sums:
    """:data:`Sums` of a probability raster inside each pixel-coordinate polygon.

    A pixel is inside when its centre is; nodata pixels do not count. Only windows around
    the polygons are read, in strips of ``strip_rows``.
    """
    if not len(polys_px):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    path = Path(prob_path)
    with open_raster(path) as ds:
        nodata = ds.nodata if ds.nodata is not None else DEFAULT_NODATA

        def read(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
            try:
                return ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            except Exception as exc:  # noqa: BLE001 - GDAL raises many types
                raise DataError(f"{path}: cannot read probability pixels ({exc})") from None

        rows = (0, ds.height)
        return _polygon_sums(polys_px, read, rows, ds.width, nodata, strip_rows, grouped=True)


def polygon_prob_stats(
    prob_path: str | os.PathLike, polys_px: Sequence[Polygon], strip_rows: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max probability inside each pixel-coordinate polygon (NaN if no valid pixel).

    A pixel is inside when its centre is; nodata pixels do not count.
    """
    return _to_means(polygon_prob_sums(prob_path, polys_px, strip_rows))


class PlantBuilder:
    """Plants from the rows of a mask, given strip by strip from top to bottom.

    Used both on a finished mask raster (:func:`vectorize_mask`) and while a prediction writes
    its rows, so that polygons are ready when the last row is. Plants inside one strip are
    completed at once (holes filled, area filter, probability statistics from the strip's
    probability rows when given). Pieces cut by strip borders are measured as they come and
    merged in :meth:`finish`, whose plant statistics combine their pieces'; only the pixels of
    holes filled in merged plants are read back from the probability raster.

    Args:
        crs, transform, width, height: the grid of the mask.
        min_area_m2: drop plants smaller than this (after hole filling).
        max_hole_m2: fill interior holes smaller than this.
        connectivity: 4 or 8 pixel connectivity.
    """

    def __init__(
        self,
        crs: object,
        transform: Affine,
        width: int,
        height: int,
        *,
        min_area_m2: float = DEFAULT_MIN_AREA_M2,
        max_hole_m2: float = DEFAULT_MAX_HOLE_M2,
        connectivity: int = 4,
    ) -> None:
        self.crs, self.transform = crs, transform
        self.width, self.height = width, height
        self.min_area_m2, self.max_hole_m2 = min_area_m2, max_hole_m2
        self.connectivity = connectivity
        self.next_row = 0
        self._areas: AreaCalculator | None = None
        self._polys: list[Polygon] = []
        self._area_m2: list[float] = []
        self._means: list[float] = []
        self._maxes: list[float] = []
        self._pieces: list[Polygon] = []
        self._piece_sums: list[Sums] = []
        self._measured = True  # every strip came with its probabilities

    @property
    def areas(self) -> AreaCalculator:
        """The equal-area calculator of the grid (made on first use: pyproj set-up is slow)."""
        if self._areas is None:
            self._areas = AreaCalculator(self.crs, self.transform, self.width, self.height)
        return self._areas

    def _complete(self, polys: list[Polygon]) -> tuple[list[Polygon], np.ndarray, np.ndarray]:
        """Fill small holes and drop small plants: (plants, areas in m2, index into polys)."""
        index = np.arange(len(polys))
        if self.min_area_m2 > 0 and polys:
            # the area with every hole filled bounds the final area from above
            shells = np.array([Polygon(p.exterior) for p in polys], dtype=object)
            index = index[self.areas.areas_m2(shells) >= self.min_area_m2]
        if not index.size:
            return [], np.zeros(0), index
        filled = fill_holes([polys[i] for i in index], self.areas, self.max_hole_m2)
        a = self.areas.areas_m2(np.array(filled, dtype=object))
        keep = a >= self.min_area_m2
        return [p for p, k in zip(filled, keep, strict=True) if k], a[keep], index[keep]

    def _append(
        self, polys: list[Polygon], areas: np.ndarray, means: np.ndarray, maxes: np.ndarray
    ) -> None:
        self._polys += polys
        self._area_m2 += areas.tolist()
        self._means += means.tolist()
        self._maxes += maxes.tolist()

    def add_rows(
        self,
        row0: int,
        mask: np.ndarray,
        prob: np.ndarray | None = None,
        prob_nodata: float = DEFAULT_NODATA,
    ) -> None:
        """Take mask rows ``row0 ..`` (1 = PV), and the probability rows of the same pixels."""
        if row0 != self.next_row or mask.shape[1] != self.width:
            raise ValueError(
                f"mask rows must come in order and span the width: got row {row0} of width "
                f"{mask.shape[1]}, expected row {self.next_row} of width {self.width}"
            )
        self.next_row = row0 + mask.shape[0]
        closed, pieces = _strip_polygons(mask == PV_VALUE, row0, self.height, self.connectivity)
        polys, areas, _ = self._complete(closed)
        self._pieces += pieces
        if prob is None:
            self._measured = False
            nan = np.full(len(polys), np.nan)
            self._append(polys, areas, nan, nan)
            return

        def sums(geoms: list[Polygon]) -> Sums:
            def read(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
                return prob[r0 - row0 : r1 - row0, c0:c1]

            rows = (row0, self.next_row)
            return _polygon_sums(geoms, read, rows, self.width, prob_nodata, len(mask))

        if pieces:
            self._piece_sums.append(sums(pieces))
        if polys:
            self._append(polys, areas, *_to_means(sums(polys)))

    def _merged_sums(
        self, merged: list[Polygon], plants: list[Polygon], src: np.ndarray, prob_path: object
    ) -> Sums:
        """Sums of merged plants: their pieces' sums, plus the pixels of holes filled since."""
        pieces = np.array(self._pieces, dtype=object)
        total, count, peak = (np.concatenate(x) for x in zip(*self._piece_sums, strict=True))
        tree = shapely.STRtree(np.array(merged, dtype=object))
        # each piece lies inside exactly one merged polygon; a point inside it tells which
        p_idx, m_idx = tree.query(shapely.point_on_surface(pieces), predicate="within")
        out = (np.zeros(len(merged)), np.zeros(len(merged)), np.full(len(merged), -np.inf))
        np.add.at(out[0], m_idx, total[p_idx])
        np.add.at(out[1], m_idx, count[p_idx])
        np.maximum.at(out[2], m_idx, peak[p_idx])
        total, count, peak = (x[src] for x in out)
        before = np.array([merged[i] for i in src], dtype=object)
        after = np.array(plants, dtype=object)
        grew = shapely.get_num_interior_rings(after) < shapely.get_num_interior_rings(before)
        if prob_path is not None and grew.any():
            holes = shapely.difference(after[grew], before[grew])
            h_total, h_count, h_peak = polygon_prob_sums(prob_path, list(holes))
            total[grew] += h_total
            count[grew] += h_count
            peak[grew] = np.maximum(peak[grew], h_peak)
        return total, count, peak

    def finish(self, prob_path: str | os.PathLike | None = None) -> list[Plant]:
        """Merge the pieces cut by strip borders and return every plant.

        Args:
            prob_path: probability raster on the mask's grid. Where every strip came with its
                probabilities it only measures the holes filled in merged plants; otherwise
                it measures every plant. None: statistics from the strips only (plants that
                were never measured get NaN).

        Returns:
            Plants sorted by their top-left corner, numbered from 1, in the grid's CRS.
        """
        if self.next_row != self.height:
            raise ValueError(f"mask rows {self.next_row}..{self.height} were never given")
        merged = _merge_pieces(self._pieces)
        polys, areas, src = self._complete(merged)
        if self._measured and polys:
            means, maxes = _to_means(self._merged_sums(merged, polys, src, prob_path))
        else:
            means = maxes = np.full(len(polys), np.nan)
        self._append(polys, areas, means, maxes)
        self._pieces, self._piece_sums = [], []
        if not self._polys:
            return []
        means, maxes = np.array(self._means), np.array(self._maxes)
        if not self._measured and prob_path is not None:
            means, maxes = polygon_prob_stats(prob_path, self._polys)
        order = sorted(
            range(len(self._polys)),
            key=lambda i: (self._polys[i].bounds[1], self._polys[i].bounds[0]),
        )
        geoms = self.areas.to_crs(np.array([self._polys[i] for i in order], dtype=object))
        return [
            Plant(k + 1, g, self._area_m2[i], float(means[i]), float(maxes[i]))
            for k, (i, g) in enumerate(zip(order, geoms, strict=True))
        ]


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
        if ds.crs is None:
            raise DataError(f"{path}: no CRS; cannot compute plant areas")
        builder = PlantBuilder(
            ds.crs,
            ds.transform,
            ds.width,
            ds.height,
            min_area_m2=min_area_m2,
            max_hole_m2=max_hole_m2,
            connectivity=connectivity,
        )
        for row0 in range(0, ds.height, strip_rows):
            rows = min(strip_rows, ds.height - row0)
            builder.add_rows(row0, _read_rows(ds, path, row0, rows, "mask"))
    return builder.finish(prob_path)


__all__ = [
    "PlantBuilder",
    "fill_holes",
    "polygon_prob_stats",
    "polygon_prob_sums",
    "vectorize_mask",
]

"""The area of a job cut from the local scenes that cover it, as one GeoTIFF.

The grid is that of the scene covering most of the area (its CRS, pixel size and pixel
alignment, so that a one-scene area is a plain copy of its pixels). Every scene is seen
through a rasterio ``WarpedVRT`` onto that grid (nearest neighbour, as the training chips were
cut), and the grid is filled block by block, each pixel from the first scene that has a valid
value there (the reference scene first, then by file name). Pixels outside a polygon area are
nodata. Memory is bounded by the block size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pvdetect.data.raster import DEFAULT_NODATA, geotiff_profile, open_raster, valid_pixels
from pvdetect.errors import ConfigError, DataError, OutputError
from pvdetect.io import atomic_output, first_line
from pvdetect.serve.sources import SceneFootprint

__all__ = ["AreaGrid", "MosaicResult", "area_grid", "build_mosaic", "covering", "mask_outside"]

#: rows of the grid filled at a time
BLOCK_ROWS = 512
#: the largest area grid (10^8 pixels: 100 km square at 10 m)
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class AreaGrid:
    """A north-up grid: CRS, transform, size."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)


@dataclass
class MosaicResult:
    """What :func:`build_mosaic` wrote."""

    path: Path
    grid: AreaGrid
    scenes: list[Path]
    warnings: list[str] = field(default_factory=list)


def _box(bbox: Sequence[float]) -> shapely.Geometry:
    return shapely.geometry.box(*bbox)


def covering(
    footprints: Sequence[SceneFootprint],
    bbox: tuple[float, float, float, float],
    polygon: shapely.Geometry | None = None,
) -> list[SceneFootprint]:
    """The scenes whose WGS 84 box meets the area, the one covering most of it first."""
    area = polygon if polygon is not None else _box(bbox)
    hits = [(f, _box(f.bbox).intersection(area).area) for f in footprints]
    hits = [(f, a) for f, a in hits if a > 0]
    hits.sort(key=lambda fa: (-fa[1], fa[0].path.name))
    return [f for f, _ in hits]


def area_grid(
    reference: SceneFootprint,
    bbox: tuple[float, float, float, float],
    centre_sides: tuple[float, float, float, float] | None = None,
) -> AreaGrid:
    """The grid of an area on the pixels of ``reference``.

    Args:
        reference: The scene whose CRS, pixel size and alignment the grid takes.
        bbox: The area in WGS 84.
        centre_sides: ``(lon, lat, width_m, height_m)`` of a point area: its rectangle is laid
            out around the projected centre (a projected CRS in metres), not around ``bbox``.

    Raises:
        ConfigError: The grid would be empty or too large.
    """
    with open_raster(reference.path) as ds:
        t = ds.transform
    resx, resy = abs(t.a), abs(t.e)
    crs = reference.crs
    metres = crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m")
    if centre_sides is not None and metres:
        lon, lat, w_m, h_m = centre_sides
        tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        x, y = tr.transform(lon, lat)
        left, bottom, right, top = x - w_m / 2, y - h_m / 2, x + w_m / 2, y + h_m / 2
    else:
        left, bottom, right, top = transform_bounds("EPSG:4326", crs, *bbox, densify_pts=21)
    eps = 1e-6  # of a pixel: a corner given in degrees comes back a hair off after projection
    col0 = math.floor((left - t.c) / resx + eps)
    col1 = math.ceil((right - t.c) / resx - eps)
    row0 = math.floor((t.f - top) / resy + eps)
    row1 = math.ceil((t.f - bottom) / resy - eps)
    width, height = col1 - col0, row1 - row0
    if width < 1 or height < 1:
        raise ConfigError("area: smaller than one pixel of the scenes")
    if width * height > MAX_PIXELS:
        raise ConfigError(f"area: {width} x {height} pixels, more than {MAX_PIXELS:,}")
    transform = Affine(resx, 0.0, t.c + col0 * resx, 0.0, -resy, t.f - row0 * resy)
    return AreaGrid(crs, transform, width, height)


def _dtype_nodata(datasets: Sequence[rasterio.DatasetReader]) -> tuple[str, float]:
    """One dtype for all scenes and a nodata value it can hold."""
    dtype = np.result_type(*[np.dtype(ds.dtypes[0]) for ds in datasets])
    nodata = datasets[0].nodata
    nodata = float(nodata) if nodata is not None else DEFAULT_NODATA
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not info.min <= nodata <= info.max:
            dtype = np.dtype("float32")
    return str(np.dtype(dtype)), nodata


def mask_outside(polygon_wgs84: shapely.Geometry, grid: AreaGrid, window: Window) -> np.ndarray:
    """``bool [rows, cols]``: True at pixels of ``window`` whose centre lies outside the polygon."""
    tr = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    shape = shapely.transform(
        polygon_wgs84, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
    )
    t = grid.transform
    wt = Affine(t.a, 0.0, t.c + window.col_off * t.a, 0.0, t.e, t.f + window.row_off * t.e)
    return geometry_mask(
        [shapely.geometry.mapping(shape)],
        out_shape=(int(window.height), int(window.width)),
        transform=wt,
    )


def build_mosaic(
    scenes: Sequence[SceneFootprint],
    grid: AreaGrid,
    out_path: Path,
    *,
    polygon: shapely.Geometry | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MosaicResult:
    """Write the area from ``scenes`` (reference first) onto ``grid`` as a tiled GeoTIFF.

    Raises:
        DataError: A scene cannot be read. OutputError: The file cannot be written.
    """
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(open_raster(s.path)) for s in scenes]
        count = opened[0].count
        usable = []
        for scene, ds in zip(scenes, opened, strict=True):
            if ds.count != count:
                warnings.append(
                    f"{scene.path.name}: {ds.count} bands, not {count} like "
                    f"{scenes[0].path.name}; skipped"
                )
            else:
                usable.append((scene, ds))
        dtype, nodata = _dtype_nodata([ds for _, ds in usable])
        vrts = [
            stack.enter_context(
                WarpedVRT(
                    ds,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling.nearest,
                    nodata=nodata,
                    dtype=dtype,
                )
            )
            for _, ds in usable
        ]
        descriptions = opened[0].descriptions
        profile = geotiff_profile(
            height=grid.height,
            width=grid.width,
            count=count,
            dtype=dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
        )
        profile["BIGTIFF"] = "IF_SAFER"
        starts = list(range(0, grid.height, BLOCK_ROWS))
        try:
            with atomic_output(out_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                for i, d in enumerate(descriptions, start=1):
                    if d:
                        dst.set_band_description(i, d)
                for k, row0 in enumerate(starts, start=1):
                    window = Window(0, row0, grid.width, min(BLOCK_ROWS, grid.height - row0))
                    dst.write(_fill(vrts, window, nodata, dtype, polygon, grid), window=window)
                    if progress is not None:
                        progress(k, len(starts))
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(
                f"{scenes[0].path.parent}: cannot read a scene ({first_line(exc)})"
            ) from None
        except rasterio.errors.RasterioError as exc:
            raise OutputError(f"{out_path}: cannot write the mosaic ({first_line(exc)})") from None
    return MosaicResult(out_path, grid, [s.path for s, _ in usable], warnings)


def _fill(
    vrts: Sequence[WarpedVRT],
    window: Window,
    nodata: float,
    dtype: str,
    polygon: shapely.Geometry | None,
    grid: AreaGrid,
) -> np.ndarray:
    """One block: each pixel from the first scene valid there; nodata elsewhere."""
    rows, cols = int(window.height), int(window.width)
    out = np.full((vrts[0].count, rows, cols), nodata, dtype=dtype)
    todo = np.ones((rows, cols), bool)
    if polygon is not None:
        todo &= ~mask_outside(polygon, grid, window)
    for vrt in vrts:
        if not todo.any():
            break
        data = vrt.read(window=window)
        take = todo & valid_pixels(data, nodata)
        out[:, take] = data[:, take]
        todo &= ~take
    return out

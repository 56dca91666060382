"""Where a tile's imagery comes from: the :class:`TileSource` protocol and local scenes.

A source tells the driver where it has imagery (:meth:`TileSource.footprint`), hands each
task the small part of itself a tile needs (:meth:`TileSource.for_tile`: tasks carry paths and
a few numbers, never pixels) and, on the worker, writes the tile's raster
(:meth:`TileSource.read`): a GeoTIFF on the tile's grid (cell plus margins, the tile's UTM CRS,
the bundle's bands in its order, float32, nodata -9999) that
:func:`~pvdetect.inference.predict.predict_scene` then predicts.

:class:`LocalScenes` reads GeoTIFF scenes given on the command line. Each pixel of a tile comes
from the **most recent scene that is valid there** (every band valid): scenes are ranked by
acquisition date, newest first, taken from the file's ``ACQUISITION_DATE``, ``DATETIME`` or
``TIFFTAG_DATETIME`` tag or else from a ``YYYYMMDD`` in its name (as in Sentinel-2 product
names); scenes without a date come after the dated ones, in the order given. A scene in the
tile's CRS on the tile's pixel grid is read as it is (a window, no resampling); any other scene
is warped to the tile's grid by GDAL (a ``WarpedVRT``, bilinear). Stored values become
reflectance x 10000 as ``predict`` would make them (:mod:`pvdetect.data.radiometry`: the
file's GDAL scale/offset, or Sentinel-2 ``BOA_ADD_OFFSET`` metadata), scene by scene, before
they are composited: scenes of processing baselines before and after 04.00 mix correctly.

Catalog imagery (``--catalog``, fetched per tile by :mod:`pvdetect.acquire`) is the other
implementation of the protocol: :class:`pvdetect.mapping.catalog.CatalogScenes`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyproj
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pvdetect.data.radiometry import Radiometry, radiometry_for
from pvdetect.data.raster import (
    DEFAULT_NODATA,
    geotiff_profile,
    open_raster,
    raster_info,
    valid_pixels,
)
from pvdetect.errors import DataError, OutputError
from pvdetect.io import first_line
from pvdetect.mapping.grid import Tile, to_crs

__all__ = ["LocalScenes", "SceneRef", "TileSource", "scene_date"]

#: nodata of the tile rasters handed to the prediction
TILE_NODATA = DEFAULT_NODATA
DATE_TAGS = ("ACQUISITION_DATE", "DATETIME", "TIFFTAG_DATETIME", "SENSING_TIME")
_NAME_DATE = re.compile(r"(?<!\d)(20\d{2}|19\d{2})(\d{2})(\d{2})(?!\d)")


@runtime_checkable
class TileSource(Protocol):
    """Imagery for the tiles of a map."""

    def footprint(self) -> BaseGeometry | None:
        """Where the source has imagery (EPSG:4326); None: wherever asked."""

    def for_tile(self, tile: Tile) -> TileSource | None:
        """The part of the source ``tile`` needs (sent to the worker); None: no imagery."""

    def read(self, tile: Tile, work_dir: Path) -> Path:
        """Write the tile's raster (cell plus margins, bundle bands) into ``work_dir``."""

    def describe(self) -> dict[str, Any]:
        """What identifies the imagery (JSON), compared when a run is resumed."""


def scene_date(path: Path, tags: dict[str, str]) -> str | None:
    """Acquisition date of a scene as ``YYYY-MM-DD`` (tags first, then the file name)."""
    for key in DATE_TAGS:
        value = tags.get(key)
        if value:
            m = re.match(r"\s*(\d{4})[-:/]?(\d{2})[-:/]?(\d{2})", value)
            if m:
                return _valid_date(*m.groups())
    for m in _NAME_DATE.finditer(path.name):
        date = _valid_date(*m.groups())
        if date:
            return date
    return None


def _valid_date(y: str, m: str, d: str) -> str | None:
    try:
        return _dt.date(int(y), int(m), int(d)).isoformat()
    except ValueError:
        return None


@dataclass(frozen=True)
class SceneRef:
    """What a worker needs to know of one scene."""

    path: str
    crs_wkt: str
    transform: tuple[float, ...]  # GDAL order
    width: int
    height: int
    nodata: float
    bands: tuple[int, ...]  # 1-based, in the bundle's order
    date: str | None
    footprint_wkb: bytes  # EPSG:4326
    size: int
    mtime_ns: int
    gain: tuple[float, ...] = ()  # stored -> reflectance x 10000 per band (empty: as stored)
    bias: tuple[float, ...] = ()

    @property
    def affine(self) -> Affine:
        """The scene's geotransform."""
        return Affine.from_gdal(*self.transform)

    @property
    def footprint(self) -> BaseGeometry:
        """The scene's bounds in EPSG:4326."""
        return shapely.from_wkb(self.footprint_wkb)


def _scene_ref(path: Path, band_order: Sequence[str], in_channels: int, nodata: float) -> SceneRef:
    from pvdetect.inference.tiling import band_indices

    info = raster_info(path)
    with open_raster(path) as ds:
        tags = ds.tags()
    if info.crs is None or not info.georeferenced:
        raise DataError(f"{path}: no CRS or geotransform; a map needs georeferenced scenes")
    t = info.transform
    if t.b != 0 or t.d != 0:
        raise DataError(f"{path}: rotated geotransform; not supported")
    bands = band_indices(info, band_order, in_channels)
    minx, maxy = t.c, t.f
    maxx, miny = t.c + t.a * info.width, t.f + t.e * info.height
    bounds = box(min(minx, maxx), min(miny, maxy), max(minx, maxx), max(miny, maxy))
    try:
        tr = pyproj.Transformer.from_crs(
            pyproj.CRS.from_wkt(info.crs.to_wkt()), "EPSG:4326", always_xy=True
        )
        seg = max(abs(t.a) * info.width, abs(t.e) * info.height) / 32
        foot = to_crs(shapely.segmentize(bounds, seg), tr)
    except (pyproj.exceptions.ProjError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot place the scene on the globe ({first_line(exc)})"
        ) from None
    if not foot.is_valid or foot.is_empty or not np.isfinite(foot.bounds).all():
        raise DataError(f"{path}: cannot place the scene on the globe")
    st = path.stat()
    radiometry = radiometry_for(info, bands)
    return SceneRef(
        path=str(path.resolve()),
        crs_wkt=info.crs.to_wkt(),
        transform=tuple(t.to_gdal()),
        width=info.width,
        height=info.height,
        nodata=float(info.nodata) if info.nodata is not None else float(nodata),
        bands=tuple(bands),
        date=scene_date(path, tags),
        footprint_wkb=shapely.to_wkb(foot),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        gain=() if radiometry.identity else radiometry.gain,
        bias=() if radiometry.identity else radiometry.bias,
    )


@dataclass(frozen=True)
class LocalScenes:
    """GeoTIFF scenes on a file system every worker sees, in priority order (newest first).

    Build it with :meth:`from_paths`; see the module docstring for how tiles are read.
    """

    scenes: tuple[SceneRef, ...]
    band_names: tuple[str, ...]

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | Path],
        band_order: Sequence[str],
        in_channels: int,
        nodata: float = DEFAULT_NODATA,
    ) -> LocalScenes:
        """Check every scene (files and folders of them) against the bundle's bands."""
        from pvdetect.inference.predict import expand_inputs

        files = expand_inputs(paths)
        refs = [_scene_ref(p, band_order, in_channels, nodata) for p in files]
        # newest first; undated after the dated ones; ties in the order given
        order = sorted(
            range(len(refs)),
            key=lambda i: (refs[i].date is None, _neg_date(refs[i].date), i),
        )
        return cls(tuple(refs[i] for i in order), tuple(band_order))

    def footprint(self) -> BaseGeometry:
        """Union of the scenes' bounds (EPSG:4326)."""
        return shapely.union_all([s.footprint for s in self.scenes])

    def for_tile(self, tile: Tile) -> LocalScenes | None:
        """The scenes that reach into the tile's raster, in the same order."""
        to_ll = pyproj.Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
        rb = box(*tile.raster_bounds)
        area = to_crs(shapely.segmentize(rb, tile.size_px * tile.res / 8), to_ll)
        hits = tuple(s for s in self.scenes if shapely.intersects(area, s.footprint))
        return replace(self, scenes=hits) if hits else None

    def describe(self) -> dict[str, Any]:
        """Paths, sizes and modification times of the scenes, in priority order."""
        return {
            "kind": "scenes",
            "scenes": [
                {"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "date": s.date}
                for s in self.scenes
            ],
        }

    def read(self, tile: Tile, work_dir: Path) -> Path:
        """Composite of the scenes on the tile's grid (newest valid pixel), as a GeoTIFF."""
        n, c = tile.size_px, len(self.band_names)
        out = np.full((c, n, n), TILE_NODATA, dtype=np.float32)
        filled = np.zeros((n, n), dtype=bool)
        dst_crs = CRS.from_epsg(tile.epsg)
        for scene in self.scenes:
            data, ok = _read_scene(scene, dst_crs, tile)
            take = ok & ~filled
            if take.any():
                np.copyto(out, data, where=take[None])
                filled |= take
            if filled.all():
                break
        path = Path(work_dir) / f"{tile.id}.tif"
        profile = geotiff_profile(
            height=n,
            width=n,
            count=c,
            dtype="float32",
            crs=dst_crs,
            transform=tile.transform,
            nodata=TILE_NODATA,
            compress=None,  # read once, right away, by the prediction on the same machine
        )
        try:
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(out)
                for i, name in enumerate(self.band_names, start=1):
                    dst.set_band_description(i, name)
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"{work_dir}: cannot write the tile raster ({exc})") from None
        return path


def _neg_date(date: str | None) -> int:
    return -int(date.replace("-", "")) if date else 0


def _aligned(scene: SceneRef, dst_crs: CRS, tile: Tile) -> tuple[int, int] | None:
    """Pixel offset (col, row) of the tile's raster in the scene when the grids coincide."""
    t = scene.affine
    if abs(t.a - tile.res) > 1e-9 * tile.res or abs(t.e + tile.res) > 1e-9 * tile.res:
        return None
    if CRS.from_wkt(scene.crs_wkt) != dst_crs:
        return None
    tt = tile.transform
    col, row = (tt.c - t.c) / tile.res, (t.f - tt.f) / tile.res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(col), round(row)


def _read_scene(scene: SceneRef, dst_crs: CRS, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The scene's bands on the tile's grid and where they are valid."""
    n, path = tile.size_px, Path(scene.path)
    offset = _aligned(scene, dst_crs, tile)
    try:
        with open_raster(path) as src:
            if offset is not None:
                data = np.full((len(scene.bands), n, n), scene.nodata, dtype=np.float32)
                col, row = offset
                c0, r0 = max(0, col), max(0, row)
                c1, r1 = min(scene.width, col + n), min(scene.height, row + n)
                if c1 > c0 and r1 > r0:
                    win = Window(c0, r0, c1 - c0, r1 - r0)
                    data[:, r0 - row : r1 - row, c0 - col : c1 - col] = src.read(
                        list(scene.bands), window=win, out_dtype="float32"
                    )
            else:
                with WarpedVRT(
                    src,
                    crs=dst_crs,
                    transform=tile.transform,
                    width=n,
                    height=n,
                    resampling=Resampling.bilinear,
                    src_nodata=scene.nodata,
                    nodata=scene.nodata,
                ) as vrt:
                    data = vrt.read(list(scene.bands), out_dtype="float32")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL raises many types for broken files
        raise DataError(
            f"{path}: cannot read pixels for tile {tile.id} ({first_line(exc)})"
        ) from None
    ok = valid_pixels(data, scene.nodata)
    if scene.gain:  # GDAL scale/offset or BOA_ADD_OFFSET: the tile holds reflectance x 10000
        Radiometry(scene.gain, scene.bias).apply(data)
    return data, ok

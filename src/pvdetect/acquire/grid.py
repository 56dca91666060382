"""The output grid of an acquisition: area parsing, UTM choice, pixel-aligned extent.

An area is a WGS 84 bounding box (``W,S,E,N``) or a point (``LON,LAT``) with a square side in
kilometres. The grid is in a projected CRS (default: the UTM zone of the area's centre) and
its edges are multiples of the pixel size, so that a grid in the CRS of Sentinel-2's MGRS tiles
(whose corners are multiples of 60 m) falls on the tiles' own 10 m pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from pvdetect.errors import ConfigError

WGS84 = CRS.from_epsg(4326)
#: the largest grid an acquisition writes (about 316 km square at 10 m)
MAX_PIXELS = 1_000_000_000


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid.

    Attributes:
        crs: Projected CRS of the grid.
        transform: Affine transform of the top-left corner, pixel size ``res``.
        width: Columns.
        height: Rows.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> float:
        """Pixel size in CRS units."""
        return self.transform.a

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        left, top = self.transform.c, self.transform.f
        return (left, top - self.height * self.res, left + self.width * self.res, top)

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """The grid's extent as a WGS 84 ``(west, south, east, north)``."""
        return transform_bounds(self.crs, WGS84, *self.bounds, densify_pts=21)

    def rowcol(self, lon: float, lat: float) -> tuple[float, float]:
        """Fractional ``(row, col)`` of a WGS 84 point on the grid."""
        xs, ys = warp_transform(WGS84, self.crs, [lon], [lat])
        t = self.transform  # north-up: no rotation terms
        return ((ys[0] - t.f) / t.e, (xs[0] - t.c) / t.a)

    def to_json(self) -> dict:
        """The grid as the JSON sidecar records it."""
        epsg = self.crs.to_epsg()
        return {
            "crs": f"EPSG:{epsg}" if epsg else self.crs.to_wkt(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "resolution": self.res,
            "bounds": list(self.bounds),
            "bbox": [round(v, 7) for v in self.bbox_wgs84()],
        }


def _numbers(text: str, count: int, option: str, form: str) -> list[float]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != count:
        raise ConfigError(f"{option}: expected {form}, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{option}: expected {form} (numbers), got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{option}: expected finite numbers, got {text!r}")
    return values


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` in WGS 84 degrees; west below east (no antimeridian crossing)."""
    w, s, e, n = _numbers(text, 4, "--bbox", "W,S,E,N in degrees")
    if not (-180 <= w <= 180 and -180 <= e <= 180):
        raise ConfigError(f"--bbox: longitudes must lie in [-180, 180], got {text!r}")
    if not (-90 <= s <= 90 and -90 <= n <= 90):
        raise ConfigError(f"--bbox: latitudes must lie in [-90, 90], got {text!r}")
    if w >= e:
        raise ConfigError(f"--bbox: west {w:g} must be below east {e:g} (W,S,E,N order)")
    if s >= n:
        raise ConfigError(f"--bbox: south {s:g} must be below north {n:g} (W,S,E,N order)")
    return (w, s, e, n)


def parse_point(text: str) -> tuple[float, float]:
    """``"LON,LAT"`` in WGS 84 degrees."""
    lon, lat = _numbers(text, 2, "--point", "LON,LAT in degrees")
    if not -180 <= lon <= 180:
        raise ConfigError(f"--point: longitude {lon:g} outside [-180, 180] (LON,LAT order)")
    if not -84 <= lat <= 84:
        raise ConfigError(f"--point: latitude {lat:g} outside [-84, 84] (LON,LAT order)")
    return (lon, lat)


def parse_crs(text: str) -> CRS:
    """A projected CRS from ``EPSG:NNNN`` (or any text rasterio understands)."""
    try:
        crs = CRS.from_user_input(text)
    except CRSError as exc:
        raise ConfigError(f"--crs: not a CRS: {text!r} ({exc})") from None
    if not crs.is_projected:
        raise ConfigError(
            f"--crs: {text} is not projected; give a projected CRS in metres, e.g. a UTM zone"
        )
    return crs


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone of a point (EPSG 326zz north, 327zz south)."""
    zone = min(60, max(1, int(math.floor((lon + 180) / 6)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _check_resolution(res: float) -> None:
    if not (math.isfinite(res) and 0 < res <= 10000):
        raise ConfigError(f"--resolution: must be a positive size in metres, got {res:g}")


def _checked(grid: Grid, option: str) -> Grid:
    if grid.width < 1 or grid.height < 1:
        raise ConfigError(f"{option}: the area is smaller than one pixel")
    if grid.width * grid.height > MAX_PIXELS:
        raise ConfigError(
            f"{option}: the area is {grid.width} x {grid.height} pixels, more than the "
            f"{MAX_PIXELS:,} an acquisition writes; split it or use a coarser --resolution"
        )
    return grid


def grid_for_bbox(bbox: tuple[float, float, float, float], crs: CRS, res: float) -> Grid:
    """The smallest pixel-aligned grid in ``crs`` that covers a WGS 84 bbox."""
    _check_resolution(res)
    left, bottom, right, top = transform_bounds(WGS84, crs, *bbox, densify_pts=21)
    x0 = math.floor(left / res) * res
    y1 = math.ceil(top / res) * res
    width = math.ceil((right - x0) / res - 1e-9)
    height = math.ceil((y1 - bottom) / res - 1e-9)
    return _checked(Grid(crs, Affine(res, 0.0, x0, 0.0, -res, y1), width, height), "--bbox")


def grid_for_point(lon: float, lat: float, size_m: float, crs: CRS, res: float) -> Grid:
    """A square grid of about ``size_m`` a side, pixel-aligned, centred on a WGS 84 point."""
    _check_resolution(res)
    if not (math.isfinite(size_m) and size_m > 0):
        raise ConfigError(f"--size-km: must be positive, got {size_m / 1000:g}")
    xs, ys = warp_transform(WGS84, crs, [lon], [lat])
    n = max(1, math.ceil(size_m / res - 1e-9))
    x0 = math.floor(xs[0] / res - n / 2) * res
    y1 = math.floor(ys[0] / res + n / 2) * res
    return _checked(Grid(crs, Affine(res, 0.0, x0, 0.0, -res, y1), n, n), "--size-km")

"""Assets read over HTTP and warped onto the output grid, one item at a time.

:class:`AssetReader` opens one asset through GDAL's ``/vsicurl/`` (signing its address right
before) and warps it onto the grid with a rasterio ``WarpedVRT``: reading a window of the VRT
makes GDAL fetch, by HTTP range requests, only the source tiles under that window. A grid
clearly coarser than the asset reads its nearest fitting overview, averaged; otherwise
reflectance is resampled by nearest neighbour, and the scene classification always is.

:class:`ItemReader` reads an item's four bands and its classification over a window and
returns them as an :class:`Observation`: reflectance x 10000 in int16, invalid where a band
has no data or the classification masks the pixel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from pvdetect.acquire.assets import BandAsset, ItemAssets
from pvdetect.acquire.grid import WGS84, Grid
from pvdetect.acquire.http import NetworkError, gdal_path, public_url
from pvdetect.acquire.signing import Signer
from pvdetect.errors import DataError
from pvdetect.io import first_line

OUT_NODATA = -9999
OUT_MIN, OUT_MAX = -9998, 32766
INVALID = np.int16(32767)  # not clear; sorts after every valid value


def _intersect(a: Window, b: Window) -> Window | None:
    c0, r0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _grid_window(grid: Grid, bounds: tuple[float, float, float, float]) -> Window | None:
    """Whole-pixel window of the grid covering ``bounds`` (in the grid's CRS), one pixel wider."""
    win = from_bounds(*bounds, transform=grid.transform)
    c0 = math.floor(win.col_off) - 1
    r0 = math.floor(win.row_off) - 1
    c1 = math.ceil(win.col_off + win.width) + 1
    r1 = math.ceil(win.row_off + win.height) + 1
    return _intersect(Window(c0, r0, c1 - c0, r1 - r0), Window(0, 0, grid.width, grid.height))


class AssetReader:
    """One asset, warped onto the grid; opened on first use."""

    def __init__(self, asset: BandAsset, grid: Grid, signer: Signer) -> None:
        self.asset = asset
        self.grid = grid
        self.signer = signer
        self._src: rasterio.DatasetReader | None = None
        self._vrt: WarpedVRT | None = None
        self._nodata: float | None = None
        self._alpha = False
        self.bounds: tuple[float, float, float, float] | None = None

    def _fail(self, exc: Exception, what: str) -> DataError:
        url = public_url(self.asset.href)
        text = re.sub(r"'/vsi[a-z0-9]+/[^']*' ", "", first_line(exc))  # the URL, said already
        low = text.lower()
        if any(k in low for k in ("http", "curl", "timed out", "connect", "resolve host")):
            return NetworkError(f"{url}: {what} ({text})")
        return DataError(f"{url}: {what} ({text})")

    def open(self) -> None:
        """Open the asset and its warped view (signing the address right before)."""
        if self._vrt is not None:
            return
        path = gdal_path(self.signer.sign(self.asset.href))
        try:
            src = rasterio.open(path)
            level = self._overview_level(src)
            if level is not None:
                src.close()
                src = rasterio.open(path, overview_level=level)
            self._src = src
            self._vrt = self._warp(src)
            self.bounds = transform_bounds(src.crs, self.grid.crs, *src.bounds, densify_pts=21)
        except RasterioError as exc:
            self.close()
            raise self._fail(exc, "cannot open the asset") from None

    def _overview_level(self, src: rasterio.DatasetReader) -> int | None:
        """Index of the coarsest overview still at least as fine as the grid, or None."""
        if src.crs is None or not src.crs.is_projected:
            return None  # pixel sizes in degrees do not compare with metres
        native = abs(src.transform.a)
        best = None
        for i, factor in enumerate(src.overviews(1)):
            if native * factor <= self.grid.res * 1.001:
                best = i
        return best

    def _resampling(self, src: rasterio.DatasetReader) -> Resampling:
        """Nearest, except average for reflectance on a grid clearly coarser than the asset."""
        if self.asset.band == "scl" or src.crs is None or not src.crs.is_projected:
            return Resampling.nearest
        coarser = self.grid.res > abs(src.transform.a) * 1.5
        return Resampling.average if coarser else Resampling.nearest

    def _warp(self, src: rasterio.DatasetReader) -> WarpedVRT:
        nodata = src.nodata if src.nodata is not None else self.asset.nodata
        if nodata is None and np.dtype(src.dtypes[0]).kind == "u":
            nodata = 0.0  # Sentinel-2 L2A: a stored 0 is no data
        common = dict(
            crs=self.grid.crs,
            transform=self.grid.transform,
            width=self.grid.width,
            height=self.grid.height,
            resampling=self._resampling(src),
        )
        self._nodata = nodata
        if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
            self._alpha = nodata is None
            if self._alpha:
                return WarpedVRT(src, add_alpha=True, **common)
            return WarpedVRT(src, **common)
        return WarpedVRT(src, src_nodata=nodata, nodata=nodata, **common)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(values, valid)`` of a grid window: stored numbers and where they are data."""
        self.open()
        assert self._vrt is not None
        try:
            if self._alpha:
                both = self._vrt.read([1, 2], window=window)
                data, valid = both[0], both[1] > 0
            else:
                data = self._vrt.read(1, window=window)
                if self._nodata is None or math.isnan(self._nodata):
                    valid = np.ones(data.shape, bool)
                else:
                    valid = data != data.dtype.type(self._nodata)
        except RasterioError as exc:
            raise self._fail(exc, "cannot read the asset") from None
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        return data, valid

    def close(self) -> None:
        """Close the VRT and the dataset."""
        for ds in (self._vrt, self._src):
            if ds is not None:
                ds.close()
        self._vrt = self._src = None


@dataclass
class Observation:
    """One item read over a block window.

    Attributes:
        window: The grid window read (inside the block).
        values: ``int16 [4, h, w]`` reflectance x 10000, :data:`INVALID` where not clear.
        covered: Where all four bands hold data.
        clear: Where covered and not masked by the scene classification.
    """

    window: Window
    values: np.ndarray
    covered: np.ndarray
    clear: np.ndarray


@dataclass
class ItemReader:
    """The five assets of one item on the grid."""

    item: ItemAssets
    grid: Grid
    signer: Signer
    mask_classes: tuple[int, ...]
    readers: list[AssetReader] = field(default_factory=list)
    scl: AssetReader | None = None
    window: Window | None = None

    def __post_init__(self) -> None:
        self.readers = [AssetReader(a, self.grid, self.signer) for a in self.item.bands]
        self.scl = AssetReader(self.item.scl, self.grid, self.signer) if self.item.scl else None
        full = Window(0, 0, self.grid.width, self.grid.height)
        if self.item.bbox is not None:
            try:
                bounds = transform_bounds(WGS84, self.grid.crs, *self.item.bbox, densify_pts=21)
                self.window = _grid_window(self.grid, bounds)
            except Exception:  # noqa: BLE001 - a bbox that does not transform: read everything
                self.window = full
        else:
            self.window = full
        self._opened = False

    def _open(self) -> None:
        if self._opened:
            return
        for r in [*self.readers, *([self.scl] if self.scl else [])]:
            r.open()
        bounds = self.readers[0].bounds
        if bounds is not None and self.window is not None:
            asset_window = _grid_window(self.grid, bounds)
            self.window = _intersect(self.window, asset_window) if asset_window else None
        self._opened = True

    def read(self, block: Window) -> Observation | None:
        """The item over ``block``, or None where it has no pixel there."""
        if self.window is None or _intersect(self.window, block) is None:
            return None
        self._open()  # may narrow the window to the asset's own bounds
        win = _intersect(self.window, block) if self.window is not None else None
        if win is None:
            return None
        h, w = int(win.height), int(win.width)
        values = np.empty((len(self.readers), h, w), np.int16)
        covered = np.ones((h, w), bool)
        for i, reader in enumerate(self.readers):
            data, valid = reader.read(win)
            covered &= valid
            scaled = data.astype(np.float32) * np.float32(reader.asset.gain)
            scaled += np.float32(reader.asset.bias)
            np.clip(np.rint(scaled), OUT_MIN, OUT_MAX, out=scaled)
            values[i] = scaled.astype(np.int16)
        clear = covered.copy()
        if self.scl is not None and self.mask_classes:
            classes, valid = self.scl.read(win)
            masked = np.isin(classes, np.asarray(self.mask_classes, dtype=classes.dtype))
            if 0 in self.mask_classes:
                masked |= ~valid  # outside the classification: "no data" (class 0)
            clear &= ~masked
        values[:, ~clear] = INVALID
        return Observation(win, values, covered, clear)

    def close(self) -> None:
        """Close every asset."""
        for r in [*self.readers, *([self.scl] if self.scl else [])]:
            r.close()

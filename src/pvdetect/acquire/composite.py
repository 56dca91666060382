"""Windowed, reprojected reads of every item onto one grid, and their per-pixel median.

Each asset is opened over HTTP (``/vsicurl/``) and warped onto the output grid by a rasterio
``WarpedVRT``; reading a window of the VRT makes GDAL fetch, by HTTP range requests, only the
source tiles under that window. Reflectance bands are resampled by nearest neighbour (by
average when the grid is coarser than the asset, from the nearest overview), the 20 m scene
classification always by nearest neighbour.

The grid is processed in square blocks (:func:`block_side`: as large as the memory budget
allows for the number of dates, up to 2048 pixels a side), so memory stays bounded for any
area and each source tile is fetched about once. In a block, items of one solar day are one
observation (the first clear value wins, items in id order); the output pixel is the median
of the clear observations, reflectance x 10000 as int16, nodata -9999 where there is none.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
import rasterio.io
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from pvdetect.acquire.assets import BandAsset, ItemAssets
from pvdetect.acquire.grid import WGS84, Grid
from pvdetect.acquire.http import (
    DEFAULT_POLICY,
    NetworkError,
    RetryPolicy,
    gdal_options,
    gdal_path,
    public_url,
)
from pvdetect.acquire.signing import NoSigner, Signer
from pvdetect.data.raster import BAND_NAMES, geotiff_profile
from pvdetect.errors import DataError, OutputError
from pvdetect.io import first_line

OUT_NODATA = -9999
OUT_MIN, OUT_MAX = -9998, 32766
_INVALID = np.int16(32767)  # sorts after every valid value
T = TypeVar("T")
R = TypeVar("R")
_END = object()
DEFAULT_MASK_CLASSES: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
DEFAULT_MEMORY_MB = 1024
WORKERS = 8
#: observations read ahead of the merge at most (bounds the memory of a block's reads)
IN_FLIGHT = 2 * WORKERS


@dataclass
class ItemStats:
    """Pixels of the grid an item covered (all four bands valid) and of those, clear ones."""

    covered: int = 0
    clear: int = 0


@dataclass
class CompositeResult:
    """What :func:`build_composite` did.

    Attributes:
        valid: Output pixels with at least one clear observation.
        total: Output pixels.
        items: Per item id, its :class:`ItemStats`.
        dates: Per solar day, output pixels with a clear observation that day.
        coverage: Where any item had data (``[H, W]`` bool), when asked for.
        block: Block side used.
    """

    valid: int
    total: int
    items: dict[str, ItemStats]
    dates: dict[str, int]
    coverage: np.ndarray | None
    block: int


def block_side(dates: int, memory_mb: float = DEFAULT_MEMORY_MB) -> int:
    """Side of the square blocks: the stack of every date in int16 with its temporaries, the
    reads in flight (:data:`IN_FLIGHT` observations) and the median's temporaries fit
    ``memory_mb``: a multiple of 256 up to 2048, or of 64 (at least 64) for very many dates."""
    bands = len(BAND_NAMES)
    # int16 stack, its sorted copy and the boolean "valid" temporary: 5 bytes a date and band
    per_pixel = max(1, dates) * bands * 5 + IN_FLIGHT * (bands * 2 + 2 + 6) + bands * 8
    side = int(math.sqrt(memory_mb * 2**20 / per_pixel))
    if side >= 256:
        return min(2048, side // 256 * 256)
    return max(64, side // 64 * 64)


def blocks(grid: Grid, side: int) -> Iterator[Window]:
    """Square windows of ``side`` pixels covering the grid, row by row."""
    for r in range(0, grid.height, side):
        for c in range(0, grid.width, side):
            yield Window(c, r, min(side, grid.width - c), min(side, grid.height - r))


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
        values: ``int16 [4, h, w]`` reflectance x 10000, :data:`_INVALID` where not clear.
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
        values[:, ~clear] = _INVALID
        return Observation(win, values, covered, clear)

    def close(self) -> None:
        """Close every asset."""
        for r in [*self.readers, *([self.scl] if self.scl else [])]:
            r.close()


def median_stack(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median over axis 0 of an int16 stack, ignoring :data:`_INVALID`.

    Returns int16 with :data:`OUT_NODATA` where no value is valid; an even count gives the
    mean of the two middle values, rounded half to even.
    """
    n = (stack != _INVALID).sum(axis=0)
    ordered = np.sort(stack, axis=0)
    lo = np.clip((n - 1) // 2, 0, None)[None]
    hi = np.clip(n // 2, 0, stack.shape[0] - 1)[None]
    a = np.take_along_axis(ordered, lo, axis=0)[0].astype(np.float32)
    b = np.take_along_axis(ordered, hi, axis=0)[0].astype(np.float32)
    med = np.rint((a + b) / 2).astype(np.int16)
    med[n == 0] = OUT_NODATA
    return med


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], args: Sequence[T], ahead: int
) -> Iterator[R]:
    """``fn`` over ``args`` in the pool, in order, with at most ``ahead`` results pending."""
    pending: deque[Future[R]] = deque()
    feed = iter(args)
    for arg in itertools.islice(feed, ahead):
        pending.append(pool.submit(fn, arg))
    while pending:
        result = pending.popleft().result()
        nxt = next(feed, _END)
        if nxt is not _END:
            pending.append(pool.submit(fn, nxt))  # type: ignore[arg-type]
        yield result


def _block_composite(
    block: Window,
    groups: Sequence[Sequence[ItemReader]],
    pool: ThreadPoolExecutor,
    env: dict[str, str],
    result: CompositeResult,
    day_names: Sequence[str],
) -> np.ndarray:
    """The ``int16 [4, h, w]`` median of one block; updates the statistics in ``result``."""
    h, w = int(block.height), int(block.width)
    stack = np.full((len(groups), len(BAND_NAMES), h, w), _INVALID, np.int16)

    def read(reader: ItemReader) -> Observation | None:
        with rasterio.Env(**env):
            return reader.read(block)

    flat = [(g, r) for g, readers in enumerate(groups) for r in readers]
    observations = _bounded_map(pool, read, [r for _, r in flat], IN_FLIGHT)
    for (g, reader), obs in zip(flat, observations, strict=True):
        if obs is None:
            continue
        stats = result.items[reader.item.item_id]
        stats.covered += int(obs.covered.sum())
        stats.clear += int(obs.clear.sum())
        r0, c0 = int(obs.window.row_off - block.row_off), int(obs.window.col_off - block.col_off)
        dst = stack[g, :, r0 : r0 + obs.values.shape[1], c0 : c0 + obs.values.shape[2]]
        take = (dst[0] == _INVALID) & obs.clear
        dst[:, take] = obs.values[:, take]
        if result.coverage is not None:
            cov = result.coverage[
                int(obs.window.row_off) : int(obs.window.row_off + obs.window.height),
                int(obs.window.col_off) : int(obs.window.col_off + obs.window.width),
            ]
            cov |= obs.covered
    for g, day in enumerate(day_names):
        result.dates[day] += int((stack[g, 0] != _INVALID).sum())
    return median_stack(stack)


@contextlib.contextmanager
def _open_output(path: Path, profile: dict) -> Iterator[rasterio.io.DatasetWriter]:
    """The composite's GeoTIFF, open for writing, its bands described; errors are OutputErrors."""
    try:
        dst = rasterio.open(path, "w", **profile)
    except RasterioError as exc:
        raise OutputError(f"{path}: cannot write ({first_line(exc)})") from None
    try:
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        yield dst
    finally:
        try:
            dst.close()
        except RasterioError as exc:
            raise OutputError(f"{path}: cannot write ({first_line(exc)})") from None


def group_by_day(items: Sequence[ItemAssets]) -> dict[str, list[ItemAssets]]:
    """Items by solar day, days in time order, items of a day in id order."""
    days: dict[str, list[ItemAssets]] = {}
    for item in sorted(items, key=lambda it: (it.solar_day, it.item_id)):
        days.setdefault(item.solar_day, []).append(item)
    return days


def build_composite(
    items: Sequence[ItemAssets],
    grid: Grid,
    out_path: Path,
    *,
    mask_classes: Sequence[int] = DEFAULT_MASK_CLASSES,
    signer: Signer | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    memory_mb: float = DEFAULT_MEMORY_MB,
    side: int | None = None,
    want_coverage: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CompositeResult:
    """Write the median composite of ``items`` on ``grid`` to a tiled GeoTIFF ``out_path``.

    Args:
        items: Items with their resolved assets.
        grid: Output grid.
        out_path: GeoTIFF to write (int16, 4 bands Red, Green, Blue, NIR, nodata -9999).
        mask_classes: Scene classification classes that make an observation invalid.
        signer: Signs asset addresses before they are opened.
        policy: GDAL's retries and timeouts.
        memory_mb: Memory budget that sets the block size.
        side: Block side in pixels (a multiple of 16), overriding ``memory_mb``.
        want_coverage: Also return where any item had data (for chip windows).
        progress: Called with (blocks done, blocks in all).

    Raises:
        NetworkError: An asset cannot be read over the network.
        DataError: An asset is not a readable raster.
    """
    signer = signer or NoSigner()
    days = group_by_day(items)
    groups = [
        [ItemReader(it, grid, signer, tuple(mask_classes)) for it in day] for day in days.values()
    ]
    side = side or block_side(len(days), memory_mb)
    env = gdal_options([h for it in items for h in it.hrefs()], policy)
    result = CompositeResult(
        valid=0,
        total=grid.width * grid.height,
        items={it.item_id: ItemStats() for it in items},
        dates=dict.fromkeys(days, 0),
        coverage=np.zeros((grid.height, grid.width), bool) if want_coverage else None,
        block=side,
    )
    profile = geotiff_profile(
        height=grid.height,
        width=grid.width,
        count=len(BAND_NAMES),
        dtype="int16",
        crs=grid.crs,
        transform=grid.transform,
        nodata=OUT_NODATA,
        blocksize=min(256, max(16, side // 16 * 16)),
    )
    profile["BIGTIFF"] = "IF_SAFER"
    all_blocks = list(blocks(grid, side))
    try:
        with (
            ThreadPoolExecutor(max_workers=WORKERS) as pool,
            rasterio.Env(**env),
            _open_output(out_path, profile) as dst,
        ):
            for done, block in enumerate(all_blocks, start=1):
                med = _block_composite(block, groups, pool, env, result, list(days))
                try:
                    dst.write(med, window=block)
                except RasterioError as exc:
                    raise OutputError(f"{out_path}: cannot write ({first_line(exc)})") from None
                result.valid += int((med[0] != OUT_NODATA).sum())
                if progress is not None:
                    progress(done, len(all_blocks))
    finally:
        for readers in groups:
            for r in readers:
                r.close()
    return result

"""The per-pixel median of every item's clear observations on one grid, block by block.

The items are read by :mod:`pvdetect.acquire.readers` (windowed, reprojected HTTP reads).
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
import rasterio.io
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pvdetect.acquire.assets import ItemAssets
from pvdetect.acquire.grid import Grid
from pvdetect.acquire.http import DEFAULT_POLICY, RetryPolicy, gdal_options
from pvdetect.acquire.readers import INVALID, OUT_NODATA, ItemReader, Observation
from pvdetect.acquire.signing import NoSigner, Signer
from pvdetect.data.raster import BAND_NAMES, geotiff_profile
from pvdetect.errors import OutputError
from pvdetect.io import first_line

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


def median_stack(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median over axis 0 of an int16 stack, ignoring :data:`INVALID`.

    Returns int16 with :data:`OUT_NODATA` where no value is valid; an even count gives the
    mean of the two middle values, rounded half to even.
    """
    n = (stack != INVALID).sum(axis=0)
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
    stack = np.full((len(groups), len(BAND_NAMES), h, w), INVALID, np.int16)

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
        take = (dst[0] == INVALID) & obs.clear
        dst[:, take] = obs.values[:, take]
        if result.coverage is not None:
            cov = result.coverage[
                int(obs.window.row_off) : int(obs.window.row_off + obs.window.height),
                int(obs.window.col_off) : int(obs.window.col_off + obs.window.width),
            ]
            cov |= obs.covered
    for g, day in enumerate(day_names):
        result.dates[day] += int((stack[g, 0] != INVALID).sum())
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

"""Tiled inference over a scene in bounded memory: plan, read, predict, blend, hand rows on.

The scene is cut into square tiles with overlap (:func:`plan_scene`); one tile row (a
horizontal strip ``tile`` rows high) is read at a time in a reader thread, which also cuts it
into tiles (:class:`StripReader`); the tiles go through the bundle in batches and their
probabilities are blended with a 2-D Hann window (a floor > 0 at tile edges so scene borders
get weight; weight 0 at invalid pixels) into an accumulator covering one tile row
(:class:`Blender`). Rows that no later tile touches are finished and handed, in a writer
thread, to the raster writers and every row sink (plant polygons, overview levels). Peak
memory is proportional to ``width x tile`` and does not grow with the scene height.

The reader also turns the stored values into the model's (band selection and radiometry of
:mod:`pvdetect.data.bands` and :mod:`pvdetect.data.radiometry`) and, with an area of interest,
gives weight 0 to pixels outside it; tiles that do not touch the AOI are neither read nor
predicted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from pvdetect.data.bands import resolve_bands
from pvdetect.data.radiometry import Radiometry, RadiometryOptions, radiometry_for
from pvdetect.data.raster import RasterInfo, open_raster, raster_info, valid_pixels
from pvdetect.errors import ConfigError, DataError, OutputError
from pvdetect.inference.aoi import Aoi, inside_mask, tiles_touching
from pvdetect.inference.options import PredictOptions
from pvdetect.inference.overlay import QuickLook

if TYPE_CHECKING:
    import shapely
    import torch

    from pvdetect.model.bundle import Bundle

__all__ = [
    "MASK_NODATA",
    "PROB_NODATA",
    "Blender",
    "RowSink",
    "ScenePlan",
    "StripReader",
    "band_indices",
    "blend_window",
    "default_batch_size",
    "encode_prob_u8",
    "plan_scene",
    "run_tiles",
    "tile_starts",
]

#: nodata of the probability and mask rasters
PROB_NODATA = -9999.0
MASK_NODATA = 255
#: probabilities stored as uint8 (``prob_dtype="uint8"``): round(p * PROB_U8_STEPS), nodata 255
PROB_U8_STEPS = 250
PROB_U8_NODATA = 255
PROB_DTYPES = ("float32", "uint8")


def encode_prob_u8(prob: np.ndarray) -> np.ndarray:
    """Probabilities (nodata :data:`PROB_NODATA`) as uint8 0..250, nodata 255."""
    out = np.rint(np.clip(prob, 0.0, 1.0) * PROB_U8_STEPS).astype(np.uint8)
    out[prob == PROB_NODATA] = PROB_U8_NODATA
    return out


#: weight of a tile's edge pixels relative to its centre
WINDOW_FLOOR = 0.01


@dataclass(frozen=True)
class ScenePlan:
    """Geometry of the tiling of one scene (input-grid pixels unless noted)."""

    path: Path
    info: RasterInfo
    bands: list[int]  # 1-based file bands in bundle order
    rgb: list[int]  # 1-based file bands for the overlay
    nodata: float
    tile: int
    overlap: int
    xs: list[int]
    ys: list[int]
    scale: int  # output pixels per input pixel
    padded_width: int
    #: stored values -> reflectance x 10000 of the selected bands (None: as stored)
    radiometry: Radiometry | None = None
    #: what each selected band is (for messages), and how they were chosen
    band_labels: tuple[str, ...] = ()
    band_source: str = ""
    #: the area of interest in the scene's CRS, and per tile row the tile columns touching it
    aoi: shapely.Geometry | None = None
    active: tuple[tuple[int, ...], ...] | None = None

    @property
    def out_width(self) -> int:
        """Width of the output rasters."""
        return self.info.width * self.scale

    @property
    def out_height(self) -> int:
        """Height of the output rasters."""
        return self.info.height * self.scale

    @property
    def out_transform(self) -> Affine:
        """Transform of the output rasters."""
        return self.info.transform @ Affine.scale(1.0 / self.scale)

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.xs) * len(self.ys)

    def active_cols(self, r: int) -> list[int]:
        """Tile columns of tile row ``r`` that are predicted (all without an AOI)."""
        if self.active is None:
            return list(range(len(self.xs)))
        return list(self.active[r])

    @property
    def n_active(self) -> int:
        """Number of tiles that are predicted."""
        return sum(len(self.active_cols(r)) for r in range(len(self.ys)))

    def owned_rows(self, r: int) -> int:
        """Input rows that tile row ``r`` finishes: up to the next tile row's start."""
        if r + 1 < len(self.ys):
            return self.ys[r + 1] - self.ys[r]
        return min(self.tile, self.info.height - self.ys[r])


def tile_starts(n: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``n`` pixels, evenly spread, at most ``stride`` apart.

    The first tile starts at 0 and the last ends at ``n``, so only scenes smaller than a tile
    need padding; neighbouring tiles overlap by at least ``tile - stride`` pixels.
    """
    if n <= tile:
        return [0]
    k = math.ceil((n - tile) / stride) + 1
    return [round(i * (n - tile) / (k - 1)) for i in range(k)]


def blend_window(size: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """2-D Hann (sin^2) window ``[size, size]``, ``floor`` at the edges and 1 in the centre."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    w = floor + (1.0 - floor) * np.sin(np.pi * t) ** 2
    return np.outer(w, w).astype(np.float32)


def _multiple(bundle: Bundle) -> int:
    try:
        return int(bundle.multiple)
    except (ImportError, AttributeError):
        return 32


def band_indices(info: RasterInfo, band_order: Sequence[str], in_channels: int) -> list[int]:
    """1-based bands of the file in the bundle's band order (:func:`resolve_bands` rules)."""
    if len(band_order) != in_channels:
        band_order = [f"band{i + 1}" for i in range(in_channels)]
    return resolve_bands(info, band_order).indices


def plan_scene(
    bundle: Bundle, path: Path, options: PredictOptions, aoi: Aoi | None = None
) -> ScenePlan:
    """Check a scene against the bundle and lay out its tiles.

    Bands come from ``options.bands`` or the file's band names (:func:`resolve_bands`), values
    are turned into reflectance x 10000 per ``options.offset`` / ``options.scale`` or the file's
    metadata, and with an ``aoi`` only tiles touching it are predicted.
    """
    info = raster_info(path)
    if info.crs is None or not info.georeferenced:
        raise DataError(f"{path}: no CRS or geotransform; georeferenced outputs need both")
    meta = bundle.meta
    wanted = list(meta.band_order)
    if len(wanted) != meta.in_channels:
        wanted = [f"band{i + 1}" for i in range(meta.in_channels)]
    selection = resolve_bands(info, wanted, options.bands)
    bands = selection.indices
    radiometry = radiometry_for(info, bands, RadiometryOptions.parse(options.offset, options.scale))
    lower = [b.lower() for b in meta.band_order]
    if all(c in lower for c in ("red", "green", "blue")):
        rgb = [bands[lower.index(c)] for c in ("red", "green", "blue")]
    else:
        rgb = (bands * 3)[:3]
    tile, overlap = _tile_overlap(bundle, options)
    factor = max(1, int(meta.upscale.factor))
    m_in = _multiple(bundle) // math.gcd(_multiple(bundle), factor)
    longest = max(info.height, info.width)
    if tile > longest:  # small scene: one tile just large enough
        tile = min(tile, m_in * math.ceil(longest / m_in))
        overlap = min(overlap, tile // 2)
    stride = tile - overlap
    xs = tile_starts(info.width, tile, stride)
    ys = tile_starts(info.height, tile, stride)
    scale = factor if options.upscaled_output else 1
    nodata = float(info.nodata) if info.nodata is not None else float(meta.nodata)
    if aoi is None and options.aoi is not None:
        from pvdetect.inference.aoi import read_aoi

        aoi = read_aoi(options.aoi)
    geom = aoi.in_crs(info.crs) if aoi is not None else None
    active = (
        tiles_touching(geom, info.transform, xs, ys, tile, (info.width, info.height))
        if geom is not None
        else None
    )
    return ScenePlan(
        path=path,
        info=info,
        bands=bands,
        rgb=rgb,
        nodata=nodata,
        tile=tile,
        overlap=overlap,
        xs=xs,
        ys=ys,
        scale=scale,
        padded_width=max(info.width, xs[-1] + tile),
        radiometry=None if radiometry.identity else radiometry,
        band_labels=tuple(selection.labels),
        band_source=selection.source,
        aoi=geom,
        active=active,
    )


def _tile_overlap(bundle: Bundle, options: PredictOptions) -> tuple[int, int]:
    meta = bundle.meta
    tile = int(options.tile if options.tile is not None else meta.tile_size)
    overlap = int(options.overlap if options.overlap is not None else meta.overlap)
    factor = max(1, int(meta.upscale.factor))
    m = _multiple(bundle)
    m_in = m // math.gcd(m, factor)
    if tile < m_in or tile % m_in:
        raise ConfigError(
            f"--tile {tile}: must be a positive multiple of {m_in} for "
            f"{meta.arch}/{meta.encoder} (upscale x{factor})"
        )
    if not 0 <= overlap < tile:
        raise ConfigError(f"--overlap {overlap}: must be >= 0 and smaller than the tile ({tile})")
    if options.prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype {options.prob_dtype!r}: expected one of {PROB_DTYPES}")
    if options.batch_size is not None and options.batch_size < 1:
        raise ConfigError(f"--batch-size {options.batch_size}: must be >= 1")
    return tile, overlap


#: default tiles per forward pass: on CPUs small batches run fastest per tile (256 px tiles of a
#: U-Net: 4 tiles 34 ms/tile, 16 tiles 38 ms/tile) and need less memory; GPUs want full batches
CPU_BATCH = 4


GPU_BATCH = 16


def default_batch_size(device: torch.device | str) -> int:
    """Tiles per forward pass when none is given: 4 on a CPU, 16 on a GPU."""
    import torch

    return CPU_BATCH if torch.device(device).type == "cpu" else GPU_BATCH


class StripReader:
    """Reads tile rows of the scene and cuts them into tiles, in the reader thread.

    Args:
        ds: the open scene.
        plan: its tiling.
        quicklook: also takes the overlay's pixels from each strip read.
        pin: put the tiles in page-locked memory (fast, asynchronous copies to a GPU).
    """

    def __init__(
        self,
        ds: rasterio.DatasetReader,
        plan: ScenePlan,
        quicklook: QuickLook | None = None,
        pin: bool = False,
    ) -> None:
        self.ds = ds
        self.plan = plan
        self.quicklook = quicklook
        self.pin = pin

    def read_strip(self, y0: int) -> tuple[np.ndarray, np.ndarray]:
        """Model values ``[C, rows, width]`` of the tile row at ``y0`` (0 where invalid) and
        the valid mask (judged on the stored values, where the file's nodata is defined)."""
        p = self.plan
        rows = min(p.tile, p.info.height - y0)
        try:
            data = self.ds.read(
                p.bands, window=Window(0, y0, p.info.width, rows), out_dtype="float32"
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises many types for broken files
            raise DataError(f"{p.path}: cannot read pixels at row {y0} ({exc})") from None
        ok = valid_pixels(data, p.nodata)
        radiometry = getattr(p, "radiometry", None)
        if radiometry is not None:
            radiometry.apply(data)
        np.copyto(data, np.float32(0.0), where=~ok)
        return data, ok

    def __call__(self, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tiles of tile row ``r``: raw ``[N, C, tile, tile]``, valid ``[N, tile, tile]`` and
        blending mask ``[N, tile, tile]`` (valid and inside the AOI; the valid tensor itself
        without an AOI), for the row's active tiles (:meth:`ScenePlan.active_cols`).

        The tiles are cut here, beside the model, so the main thread only runs the model.
        Parts of a tile beyond the scene (scenes smaller than a tile) are 0 and invalid.
        """
        import torch

        p = self.plan
        cols = p.active_cols(r)
        n, c, t = len(cols), len(p.bands), p.tile
        if not cols:  # outside the AOI: nothing to read
            empty = torch.zeros((0, t, t), dtype=torch.bool)
            return torch.zeros((0, c, t, t)), empty, empty
        data, ok = self.read_strip(p.ys[r])
        keep = ok
        if p.aoi is not None:  # outside the AOI: no weight in the blend
            keep = ok & inside_mask(p.aoi, p.info.transform, p.ys[r], ok.shape[0], p.info.width)
        if self.quicklook is not None:
            self.quicklook.add(p.ys[r], p.owned_rows(r), data, keep)
        rows, width = ok.shape
        new = torch.zeros if rows < t or p.xs[-1] + t > width else torch.empty
        tiles = new((n, c, t, t), dtype=torch.float32, pin_memory=self.pin)
        vtiles = new((n, t, t), dtype=torch.bool, pin_memory=self.pin)
        ktiles = (
            new((n, t, t), dtype=torch.bool, pin_memory=self.pin) if p.aoi is not None else vtiles
        )
        tn, vn, kn = tiles.numpy(), vtiles.numpy(), ktiles.numpy()
        for k, j in enumerate(cols):
            x0 = p.xs[j]
            w = min(t, width - x0)
            tn[k, :, :rows, :w] = data[:, :, x0 : x0 + w]
            vn[k, :rows, :w] = ok[:, x0 : x0 + w]
            if p.aoi is not None:
                kn[k, :rows, :w] = keep[:, x0 : x0 + w]
        return tiles, vtiles, ktiles


class Blender:
    """Weighted sum of tile probabilities over one tile row (output grid), on the device.

    ``acc[0]`` holds the weighted probabilities and ``acc[1]`` the weights; finished rows are
    shifted out into a second buffer of the same size, so nothing is allocated per tile row.
    """

    def __init__(self, plan: ScenePlan, device: torch.device) -> None:
        import torch

        self.plan = plan
        s = plan.scale
        self.ts = plan.tile * s
        self.width = plan.padded_width * s
        self.window = torch.from_numpy(blend_window(self.ts)).to(device)
        self.acc = torch.zeros(2, self.ts, self.width, device=device)
        self._spare = torch.zeros_like(self.acc)

    def add(self, x0: int, probs: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one tile's probabilities ``[ts, ts]`` with valid ``[ts, ts]`` at input column x0."""
        c = x0 * self.plan.scale
        w = self.window * valid
        self.acc[0, :, c : c + self.ts].addcmul_(probs, w)
        self.acc[1, :, c : c + self.ts] += w

    def pop(self, n: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Finish the top ``n`` output rows: (prob float32, mask uint8), cropped to the width."""
        import torch

        ow = self.plan.out_width
        acc, wsum = self.acc[0, :n, :ow], self.acc[1, :n, :ow]
        empty = wsum <= 0
        prob = (acc / wsum).masked_fill_(empty, PROB_NODATA)
        mask = (prob >= threshold).to(torch.uint8).masked_fill_(empty, MASK_NODATA)
        prob_np, mask_np = prob.cpu().numpy(), mask.cpu().numpy()
        self._spare[:, : self.ts - n].copy_(self.acc[:, n:])
        self._spare[:, self.ts - n :].zero_()
        self.acc, self._spare = self._spare, self.acc
        return prob_np, mask_np


#: takes finished output rows: (first row, probabilities, mask), in order from the top
RowSink = Callable[[int, np.ndarray, np.ndarray], None]


def run_tiles(
    bundle: Bundle,
    plan: ScenePlan,
    prob_dst: rasterio.io.DatasetWriter,
    mask_dst: rasterio.io.DatasetWriter,
    threshold: float,
    batch_size: int,
    tta: bool = False,
    quicklook: QuickLook | None = None,
    sinks: Sequence[RowSink] = (),
    progress: Callable[[int], object] | None = None,
) -> None:
    """Predict every tile of a scene and write the blended rows into the open datasets.

    The writer thread also hands the finished rows to each of ``sinks`` (polygons, overview
    levels), so that they are built while the model works on the next tile row. ``progress``
    is called after each tile row with the number of tiles it predicted.
    """
    device = bundle.device
    s = plan.scale
    blender = Blender(plan, device)
    pending: list[Future] = []

    def write_rows(row0: int, prob: np.ndarray, mask: np.ndarray) -> None:
        win = Window(0, row0, prob.shape[1], prob.shape[0])
        try:
            prob_dst.write(prob, 1, window=win)
            mask_dst.write(mask, 1, window=win)
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(
                f"{Path(prob_dst.name).parent}: cannot write output ({exc})"
            ) from None
        for sink in sinks:
            sink(row0, prob, mask)

    with (
        open_raster(plan.path) as src,
        ThreadPoolExecutor(1, thread_name_prefix="pv-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="pv-write") as writer,
    ):
        read = StripReader(src, plan, quicklook, pin=device.type == "cuda")
        fut = reader.submit(read, 0)
        for r, y0 in enumerate(plan.ys):
            tiles, vtiles, ktiles = fut.result()
            if r + 1 < len(plan.ys):
                fut = reader.submit(read, r + 1)
            cols = [plan.xs[j] for j in plan.active_cols(r)]
            if cols:
                tiles = tiles.to(device, non_blocking=True)
                vtiles = vtiles.to(device, non_blocking=True)
                ktiles = vtiles if plan.aoi is None else ktiles.to(device, non_blocking=True)
            for b0 in range(0, len(cols), batch_size):
                x, v = tiles[b0 : b0 + batch_size], vtiles[b0 : b0 + batch_size]
                keep = ktiles[b0 : b0 + batch_size]
                probs = bundle.predict_probs(x, v, tta=tta, native=(s == 1))
                if s > 1:
                    keep = keep.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
                for j, c in enumerate(cols[b0 : b0 + batch_size]):
                    blender.add(c, probs[j].float(), keep[j])
            prob, mask = blender.pop(plan.owned_rows(r) * s, threshold)
            pending.append(writer.submit(write_rows, y0 * s, prob, mask))
            while len(pending) > 2:
                pending.pop(0).result()
            if progress is not None:
                progress(len(cols))
        for f in pending:
            f.result()

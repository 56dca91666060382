"""Whole-scene prediction: tiled inference with bounded memory, rasters, polygons and overlays.

For each scene ``<stem>.tif`` the output folder receives

- ``<stem>_prob.tif``: PV probability (float32, nodata -9999), cloud-optimised GeoTIFF;
- ``<stem>_mask.tif``: binary mask at the bundle's threshold (uint8, 1 = PV, nodata 255), COG;
- ``<stem>_plants.gpkg``: one polygon per plant (``id``, ``area_m2``, ``area_ha``,
  ``mean_prob``, ``max_prob``) in the scene's CRS, and ``<stem>_plants.geojson`` (EPSG:4326)
  with ``--geojson``;
- ``<stem>_overlay.png``: the RGB scene (2-98 % stretch) with plant outlines, at most ~2048 px;

plus ``summary.csv`` over all scenes.

How it works: the scene is cut into square tiles with overlap; a tile row (one horizontal strip
of the scene, ``tile`` rows high) is read at a time, its tiles are run through the model in
batches, and the probabilities are blended with a 2-D Hann window (floor > 0 at tile edges so
scene borders get weight; weight 0 at invalid pixels) into an accumulator that covers just one
tile row. Rows no later tile touches are written out and dropped. Peak memory is therefore
proportional to ``width x tile`` and does not grow with the scene height (for typical widths it
is dominated by the model). Reading the next strip and writing finished rows run in background
threads while the model works; blending happens on the model's device.

Pixels that are nodata in any input band (or NaN) stay nodata in both rasters. Every output is
written to a temporary name and renamed only when the whole scene succeeded.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from pvdetect.data.raster import (
    RasterInfo,
    atomic_output,
    geotiff_profile,
    open_raster,
    raster_info,
    valid_pixels,
)
from pvdetect.errors import ConfigError, DataError, OutputError
from pvdetect.inference.cog import Pyramid, write_cog
from pvdetect.inference.overlay import QuickLook, write_overlay
from pvdetect.inference.vectorize import (
    DEFAULT_MAX_HOLE_M2,
    DEFAULT_MIN_AREA_M2,
    PlantBuilder,
    write_plants,
)

if TYPE_CHECKING:
    import torch

    from pvdetect.model.bundle import Bundle

PROB_NODATA = -9999.0
MASK_NODATA = 255
SKIP_SUFFIXES = ("_mask", "_prob")
#: GDAL block cache while predicting: a floor, plus a few tile rows of input and output blocks
GDAL_CACHE_MIN_BYTES = 32 * 1024 * 1024
#: weight of a tile's edge pixels relative to its centre
WINDOW_FLOOR = 0.01
SUMMARY_FIELDS = ("scene", "plants", "total_ha", "seconds", "width", "height")


@dataclass
class PredictOptions:
    """Options of :func:`predict_scene` (``None`` = take the value from the bundle).

    Attributes:
        tile: tile side in input pixels (multiple of the model's required multiple).
        overlap: overlap between neighbouring tiles in input pixels.
        batch_size: tiles per forward pass (None: :func:`default_batch_size` for the device).
        threshold: probability at or above which a pixel is PV.
        min_area_m2: plants smaller than this are dropped.
        max_hole_m2: holes in plants smaller than this are filled.
        tta: average the 8 flips/rotations (8x slower).
        geojson: also write ``<stem>_plants.geojson`` in EPSG:4326.
        device: "auto", "cpu", "cuda" or "cuda:N".
        upscaled_output: with an upscaling bundle, write rasters at the upscaled resolution.
        overlay: write ``<stem>_overlay.png``.
        overlay_max_side: long side of the overlay in pixels (at most).
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    threshold: float | None = None
    min_area_m2: float = DEFAULT_MIN_AREA_M2
    max_hole_m2: float = DEFAULT_MAX_HOLE_M2
    tta: bool = False
    geojson: bool = False
    device: str = "auto"
    upscaled_output: bool = False
    overlay: bool = True
    overlay_max_side: int = 2048


@dataclass
class SceneResult:
    """What :func:`predict_scene` wrote for one scene."""

    scene: Path
    width: int
    height: int
    plants: int
    total_ha: float
    seconds: float
    tiles: int
    prob_path: Path
    mask_path: Path
    plants_path: Path
    geojson_path: Path | None = None
    overlay_path: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


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

    def owned_rows(self, r: int) -> int:
        """Input rows that tile row ``r`` finishes: up to the next tile row's start."""
        if r + 1 < len(self.ys):
            return self.ys[r + 1] - self.ys[r]
        return min(self.tile, self.info.height - self.ys[r])


# --------------------------------------------------------------------------- planning


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
    """1-based bands of the file in the bundle's band order.

    Band descriptions naming every band of the bundle (any order, case-insensitive) select and
    reorder bands; otherwise the file must have exactly ``in_channels`` bands, taken in order.
    """
    names = [(d or "").strip().lower() for d in info.descriptions]
    wanted = [b.lower() for b in band_order]
    if len(wanted) == in_channels and all(names.count(w) == 1 for w in wanted):
        return [names.index(w) + 1 for w in wanted]
    if info.count == in_channels:
        return list(range(1, in_channels + 1))
    raise DataError(
        f"{info.path}: has {info.count} bands, the bundle expects {in_channels} "
        f"({', '.join(band_order)})"
    )


def plan_scene(bundle: Bundle, path: Path, options: PredictOptions) -> ScenePlan:
    """Check a scene against the bundle and lay out its tiles."""
    info = raster_info(path)
    if info.crs is None or not info.georeferenced:
        raise DataError(f"{path}: no CRS or geotransform; georeferenced outputs need both")
    meta = bundle.meta
    bands = band_indices(info, meta.band_order, meta.in_channels)
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
    if options.batch_size is not None and options.batch_size < 1:
        raise ConfigError(f"--batch-size {options.batch_size}: must be >= 1")
    return tile, overlap


# --------------------------------------------------------------------------- tiled inference

#: default tiles per forward pass: on CPUs small batches run fastest per tile (256 px tiles of a
#: U-Net: 4 tiles 34 ms/tile, 16 tiles 38 ms/tile) and need less memory; GPUs want full batches
CPU_BATCH = 4
GPU_BATCH = 16


def default_batch_size(device: torch.device | str) -> int:
    """Tiles per forward pass when none is given: 4 on a CPU, 16 on a GPU."""
    import torch

    return CPU_BATCH if torch.device(device).type == "cpu" else GPU_BATCH


class _StripReader:
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
        """Raw ``[C, rows, width]`` of the tile row at ``y0`` (0 where invalid) and valid mask."""
        p = self.plan
        rows = min(p.tile, p.info.height - y0)
        try:
            data = self.ds.read(
                p.bands, window=Window(0, y0, p.info.width, rows), out_dtype="float32"
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises many types for broken files
            raise DataError(f"{p.path}: cannot read pixels at row {y0} ({exc})") from None
        ok = valid_pixels(data, p.nodata)
        np.copyto(data, np.float32(0.0), where=~ok)
        return data, ok

    def __call__(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles of tile row ``r``: raw ``[N, C, tile, tile]`` and valid ``[N, tile, tile]``.

        The tiles are cut here, beside the model, so the main thread only runs the model.
        Parts of a tile beyond the scene (scenes smaller than a tile) are 0 and invalid.
        """
        import torch

        p = self.plan
        data, ok = self.read_strip(p.ys[r])
        if self.quicklook is not None:
            self.quicklook.add(p.ys[r], p.owned_rows(r), data, ok)
        n, c, t = len(p.xs), len(p.bands), p.tile
        rows, width = ok.shape
        new = torch.zeros if rows < t or p.xs[-1] + t > width else torch.empty
        tiles = new((n, c, t, t), dtype=torch.float32, pin_memory=self.pin)
        vtiles = new((n, t, t), dtype=torch.bool, pin_memory=self.pin)
        tn, vn = tiles.numpy(), vtiles.numpy()
        for j, x0 in enumerate(p.xs):
            w = min(t, width - x0)
            tn[j, :, :rows, :w] = data[:, :, x0 : x0 + w]
            vn[j, :rows, :w] = ok[:, x0 : x0 + w]
        return tiles, vtiles


class _Blender:
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
) -> None:
    """Predict every tile of a scene and write the blended rows into the open datasets.

    The writer thread also hands the finished rows to each of ``sinks`` (polygons, overview
    levels), so that they are built while the model works on the next tile row.
    """
    device = bundle.device
    s = plan.scale
    blender = _Blender(plan, device)
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
        read = _StripReader(src, plan, quicklook, pin=device.type == "cuda")
        fut = reader.submit(read, 0)
        for r, y0 in enumerate(plan.ys):
            tiles, vtiles = fut.result()
            if r + 1 < len(plan.ys):
                fut = reader.submit(read, r + 1)
            tiles = tiles.to(device, non_blocking=True)
            vtiles = vtiles.to(device, non_blocking=True)
            for b0 in range(0, len(plan.xs), batch_size):
                cols = plan.xs[b0 : b0 + batch_size]
                x, v = tiles[b0 : b0 + batch_size], vtiles[b0 : b0 + batch_size]
                probs = bundle.predict_probs(x, v, tta=tta, native=(s == 1))
                if s > 1:
                    v = v.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
                for j, c in enumerate(cols):
                    blender.add(c, probs[j].float(), v[j])
            prob, mask = blender.pop(plan.owned_rows(r) * s, threshold)
            pending.append(writer.submit(write_rows, y0 * s, prob, mask))
            while len(pending) > 2:
                pending.pop(0).result()
        for f in pending:
            f.result()


# --------------------------------------------------------------------------- outputs


def gdal_cache_bytes(plan: ScenePlan) -> int:
    """GDAL block cache for a scene: about two tile rows of input and output blocks.

    GDAL keeps written blocks in its cache until it is full; without a cap the cache (by
    default 5 % of RAM) would grow with the scene. This keeps memory proportional to width.
    """
    strip_in = len(plan.bands) * 4 * (plan.tile + 256) * plan.info.width
    strip_out = 5 * (plan.tile + 256) * plan.scale**2 * plan.info.width
    return int(GDAL_CACHE_MIN_BYTES + strip_in + 2 * strip_out)


def output_paths(out_dir: Path, stem: str, options: PredictOptions) -> dict[str, Path]:
    """The files :func:`predict_scene` writes for a scene stem."""
    paths = {
        "prob": out_dir / f"{stem}_prob.tif",
        "mask": out_dir / f"{stem}_mask.tif",
        "plants": out_dir / f"{stem}_plants.gpkg",
    }
    if options.geojson:
        paths["geojson"] = out_dir / f"{stem}_plants.geojson"
    if options.overlay:
        paths["overlay"] = out_dir / f"{stem}_overlay.png"
    return paths


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"{out_dir}: output folder is not writable")


# --------------------------------------------------------------------------- public API


def predict_scene(
    bundle: Bundle,
    scene_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    plan: ScenePlan | None = None,
) -> SceneResult:
    """Predict one scene and write its rasters, polygons and overlay into ``out_dir``.

    Args:
        bundle: a loaded bundle (on the device to use).
        scene_path: GeoTIFF with the bundle's bands, CRS and transform.
        out_dir: output folder (created if needed).
        options: prediction options; defaults from the bundle.
        plan: a tiling already made by :func:`plan_scene` (else made here).

    Returns:
        What was written. Nothing is left behind for the scene if anything fails.
    """
    options = options or PredictOptions()
    start = time.perf_counter()
    scene = Path(scene_path)
    out = Path(out_dir)
    plan = plan or plan_scene(bundle, scene, options)
    _prepare_out_dir(out)
    threshold = float(options.threshold if options.threshold is not None else bundle.meta.threshold)
    paths = output_paths(out, scene.stem, options)
    info = plan.info
    timings: dict[str, float] = {"plan": time.perf_counter() - start}
    mark = [time.perf_counter()]

    def _lap() -> float:
        now = time.perf_counter()
        mark[0], dt = now, now - mark[0]
        return dt

    try:
        work = Path(tempfile.mkdtemp(prefix=f".{scene.stem}.work-", dir=out))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write output here ({exc.strerror})") from None
    try:
        with (
            contextlib.ExitStack() as stack,
            rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(plan), GDAL_NUM_THREADS="ALL_CPUS"),
        ):
            tmp = {k: stack.enter_context(atomic_output(p)) for k, p in paths.items()}
            common = dict(
                height=plan.out_height,
                width=plan.out_width,
                count=1,
                crs=info.crs,
                transform=plan.out_transform,
                compress="zstd" if _has_zstd() else None,
            )
            prob_work, mask_work = work / "prob.tif", work / "mask.tif"
            prob_prof = geotiff_profile(dtype="float32", nodata=PROB_NODATA, **common)
            mask_prof = geotiff_profile(dtype="uint8", nodata=MASK_NODATA, **common)
            for prof in (prob_prof, mask_prof):  # temporary files: fast, multi-threaded
                prof.pop("predictor", None)
                prof["num_threads"] = "ALL_CPUS"
                if prof.get("compress") == "zstd":
                    prof["zstd_level"] = 1
            builder = PlantBuilder(
                info.crs,
                plan.out_transform,
                plan.out_width,
                plan.out_height,
                min_area_m2=options.min_area_m2,
                max_hole_m2=options.max_hole_m2,
            )
            quicklook = (
                QuickLook(plan, options.overlay_max_side)
                if options.overlay and set(plan.rgb) <= set(plan.bands)
                else None
            )
            prob_desc, mask_desc = "PV probability", f"PV mask (prob >= {threshold:g})"
            with (
                _open_write(prob_work, prob_prof) as prob_dst,
                _open_write(mask_work, mask_prof) as mask_dst,
                Pyramid(work, "prob", prob_prof, "average") as prob_levels,
                Pyramid(work, "mask", mask_prof, "nearest") as mask_levels,
            ):
                prob_dst.set_band_description(1, prob_desc)
                mask_dst.set_band_description(1, mask_desc)
                sinks: list[RowSink] = [
                    lambda row0, prob, mask: prob_levels.add_rows(row0, prob),
                    lambda row0, prob, mask: mask_levels.add_rows(row0, mask),
                    lambda row0, prob, mask: builder.add_rows(row0, mask, prob, PROB_NODATA),
                ]
                run_tiles(
                    bundle,
                    plan,
                    prob_dst,
                    mask_dst,
                    threshold,
                    options.batch_size or default_batch_size(bundle.device),
                    options.tta,
                    quicklook,
                    sinks,
                )
            timings["tiles"] = _lap()

            def cogs() -> float:
                t0 = time.perf_counter()
                with rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(plan)):
                    write_cog(prob_work, tmp["prob"], pyramid=prob_levels, description=prob_desc)
                    write_cog(mask_work, tmp["mask"], pyramid=mask_levels, description=mask_desc)
                return time.perf_counter() - t0

            # the COG copies (GDAL, off the GIL) run beside polygons and overlay, which read
            # the temporary rasters; on an error, leaving the block waits for the copies
            with ThreadPoolExecutor(1, thread_name_prefix="pv-cog") as pool:
                cog_job = pool.submit(cogs)
                plants = builder.finish(prob_work)  # merges plants cut by tile rows
                timings["vectorize"] = _lap()
                write_plants(tmp["plants"], plants, info.crs, driver="GPKG")
                if "geojson" in tmp:
                    write_plants(tmp["geojson"], plants, info.crs, driver="GeoJSON", to_wgs84=True)
                if "overlay" in tmp:
                    write_overlay(tmp["overlay"], plan, plants, options.overlay_max_side, quicklook)
                timings["write_vectors_overlay"] = _lap()
                timings["cog"] = cog_job.result()
            timings["cog_wait"] = _lap()
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SceneResult(
        scene=scene,
        width=info.width,
        height=info.height,
        plants=len(plants),
        total_ha=float(sum(p.area_ha for p in plants)),
        seconds=time.perf_counter() - start,
        tiles=plan.n_tiles,
        prob_path=paths["prob"],
        mask_path=paths["mask"],
        plants_path=paths["plants"],
        geojson_path=paths.get("geojson"),
        overlay_path=paths.get("overlay"),
        outputs=list(paths.values()),
        timings=timings,
    )


@contextlib.contextmanager
def _open_write(path: Path, profile: dict):
    try:
        ds = rasterio.open(path, "w", **profile)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many types
        raise OutputError(f"{path.parent}: cannot write output here ({exc})") from None
    try:
        yield ds
    finally:
        ds.close()


@functools.cache
def _has_zstd() -> bool:
    """Whether GDAL's GTiff driver here writes ZSTD (fast compression of temporary files)."""
    return _gtiff_supports("ZSTD")


def _gtiff_supports(codec: str) -> bool:
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Path(d) / "t.tif"
        try:
            with rasterio.open(
                p, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", compress=codec
            ) as ds:
                ds.write(np.zeros((1, 16, 16), np.uint8))
            with rasterio.open(p) as ds:
                return (ds.compression is not None) and ds.compression.name.upper() == codec
        except Exception:  # noqa: BLE001
            return False


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Scene files from files and folders (every .tif/.tiff except ``*_mask``, ``*_prob``)."""
    scenes: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and f.suffix.lower() in (".tif", ".tiff")
                and not f.stem.endswith(SKIP_SUFFIXES)
                and not f.name.startswith(".")
            )
            if not found:
                raise DataError(f"{p}: folder holds no scene .tif files")
            scenes += found
        elif not p.exists():
            raise DataError(f"{p}: file not found")
        else:
            scenes.append(p)
    if not scenes:
        raise ConfigError("no input scenes given")
    stems: dict[str, Path] = {}
    for s in scenes:
        if s.stem in stems and stems[s.stem].resolve() != s.resolve():
            raise ConfigError(f"{s}: same file name as {stems[s.stem]}; outputs would collide")
        stems[s.stem] = s
    return list(dict.fromkeys(scenes))


def write_summary(path: Path, results: Sequence[SceneResult]) -> Path:
    """``summary.csv``: one row per scene."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY_FIELDS)
        for r in results:
            w.writerow(
                [r.scene.name, r.plants, f"{r.total_ha:.4f}", f"{r.seconds:.2f}", r.width, r.height]
            )
    return path


def predict_scenes(
    bundle_path: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
) -> list[SceneResult]:
    """Load a bundle and predict every scene; writes ``summary.csv`` in ``out_dir``.

    Every scene is checked against the bundle before any is predicted. If a scene fails, the
    scenes finished before it keep their files (listed in ``summary.csv``) and the error is
    raised.
    """
    from pvdetect.device import resolve_device
    from pvdetect.model.bundle import load_bundle

    options = options or PredictOptions()
    out = Path(out_dir)
    scenes = expand_inputs(inputs)
    device = resolve_device(options.device)
    bundle = load_bundle(Path(bundle_path), device=device)
    plans = [plan_scene(bundle, s, options) for s in scenes]
    _prepare_out_dir(out)
    results: list[SceneResult] = []
    try:
        for plan in plans:
            results.append(predict_scene(bundle, plan.path, out, options, plan=plan))
    finally:
        if results:
            write_summary(out / "summary.csv", results)
    return results


# --------------------------------------------------------------------------- command line

"""Whole-scene prediction: tiled inference with bounded memory, rasters, polygons and overlays.

For each scene ``<stem>.tif`` the output folder receives

- ``<stem>_prob.tif``: PV probability (float32, nodata -9999), cloud-optimised GeoTIFF;
- ``<stem>_mask.tif``: binary mask at the bundle's threshold (uint8, 1 = PV, nodata 255), COG;
- ``<stem>_plants.gpkg``: one polygon per plant (``id``, ``area_m2``, ``area_ha``,
  ``mean_prob``, ``max_prob``) in the scene's CRS, and ``<stem>_plants.geojson`` (EPSG:4326)
  with ``--geojson``;
- ``<stem>_overlay.png``: the RGB scene (2-98 % stretch) with plant outlines, at most ~2048 px;

plus ``summary.csv`` over all scenes.

Tiles are predicted by :mod:`pvdetect.inference.tiling` (bounded memory, background reads and
writes). The finished rows feed, as they are written, the plant polygons
(:class:`~pvdetect.inference.vectorize.PlantBuilder`) and the rasters' overview levels
(:class:`~pvdetect.inference.cog.Pyramid`), so after the last tile row only the merge of plants
cut by tile rows, the vector files, the overlay and the COG assembly remain, and the COG
assembly runs beside the other three.

Pixels that are nodata in any input band (or NaN) stay nodata in both rasters. Every output is
written to a temporary name and renamed only when the whole scene succeeded.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio

from pvdetect.data.raster import geotiff_profile
from pvdetect.errors import ConfigError, DataError, OutputError
from pvdetect.inference.cog import Pyramid, write_cog
from pvdetect.inference.options import PredictOptions
from pvdetect.inference.overlay import QuickLook, write_overlay
from pvdetect.inference.tiling import (
    MASK_NODATA,
    PROB_NODATA,
    PROB_U8_NODATA,
    PROB_U8_STEPS,
    RowSink,
    ScenePlan,
    default_batch_size,
    encode_prob_u8,
    plan_scene,
    run_tiles,
)
from pvdetect.inference.vectorize import Plant, PlantBuilder, write_plants
from pvdetect.io import atomic_output

if TYPE_CHECKING:
    from pvdetect.model.bundle import Bundle

__all__ = [
    "MASK_NODATA",
    "PROB_NODATA",
    "PredictOptions",
    "SceneResult",
    "expand_inputs",
    "output_paths",
    "predict_scene",
    "predict_scenes",
    "write_summary",
]

SKIP_SUFFIXES = ("_mask", "_prob")
#: GDAL block cache while predicting: a floor, plus a few tile rows of input and output blocks
GDAL_CACHE_MIN_BYTES = 32 * 1024 * 1024
SUMMARY_FIELDS = ("scene", "plants", "total_ha", "seconds", "width", "height")


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


# --------------------------------------------------------------------------- planning


# --------------------------------------------------------------------------- tiled inference


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


def _work_profiles(plan: ScenePlan) -> tuple[dict, dict]:
    """GeoTIFF profiles of the temporary full-resolution rasters (fast, multi-threaded)."""
    common = dict(
        height=plan.out_height,
        width=plan.out_width,
        count=1,
        crs=plan.info.crs,
        transform=plan.out_transform,
        compress="zstd" if _has_zstd() else None,
    )
    prob_prof = geotiff_profile(dtype="float32", nodata=PROB_NODATA, **common)
    mask_prof = geotiff_profile(dtype="uint8", nodata=MASK_NODATA, **common)
    for prof in (prob_prof, mask_prof):
        prof.pop("predictor", None)
        prof["num_threads"] = "ALL_CPUS"
        if prof.get("compress") == "zstd":
            prof["zstd_level"] = 1
    return prob_prof, mask_prof


class _Stages:
    """Seconds per stage of one scene (``SceneResult.timings``)."""

    def __init__(self, start: float) -> None:
        self.timings: dict[str, float] = {"plan": time.perf_counter() - start}
        self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._mark
        self._mark = now


@dataclass
class _SceneRun:
    """The parts of one scene's prediction that live from the first tile to the last output."""

    bundle: Bundle
    plan: ScenePlan
    options: PredictOptions
    threshold: float
    work: Path
    final: dict[str, Path]  # temporary paths of the final outputs (renamed on success)
    builder: PlantBuilder = field(init=False)
    quicklook: QuickLook | None = field(init=False)

    def __post_init__(self) -> None:
        plan, opt = self.plan, self.options
        self.builder = PlantBuilder(
            plan.info.crs,
            plan.out_transform,
            plan.out_width,
            plan.out_height,
            min_area_m2=opt.min_area_m2,
            max_hole_m2=opt.max_hole_m2,
        )
        self.quicklook = (
            QuickLook(plan, opt.overlay_max_side)
            if opt.overlay and set(plan.rgb) <= set(plan.bands)
            else None
        )

    @property
    def descriptions(self) -> tuple[str, str]:
        """Band descriptions of the probability and mask rasters."""
        return "PV probability", f"PV mask (prob >= {self.threshold:g})"

    def tiles(self) -> tuple[Pyramid, Pyramid]:
        """Predict every tile into the temporary rasters; returns their overview levels."""
        prob_prof, mask_prof = _work_profiles(self.plan)
        prob_desc, mask_desc = self.descriptions
        # the temporary raster keeps float32 (plant statistics read it); with uint8 storage
        # the levels hold the stored values and the COG copy converts the full resolution
        u8 = self.options.prob_dtype == "uint8"
        level_prof = {**prob_prof, "dtype": "uint8", "nodata": PROB_U8_NODATA} if u8 else prob_prof
        stored = encode_prob_u8 if u8 else (lambda prob: prob)
        with (
            _open_write(self.work / "prob.tif", prob_prof) as prob_dst,
            _open_write(self.work / "mask.tif", mask_prof) as mask_dst,
            Pyramid(self.work, "prob", level_prof, "average") as prob_levels,
            Pyramid(self.work, "mask", mask_prof, "nearest") as mask_levels,
        ):
            prob_dst.set_band_description(1, prob_desc)
            mask_dst.set_band_description(1, mask_desc)
            sinks: list[RowSink] = [
                lambda row0, prob, mask: prob_levels.add_rows(row0, stored(prob)),
                lambda row0, prob, mask: mask_levels.add_rows(row0, mask),
                lambda row0, prob, mask: self.builder.add_rows(row0, mask, prob, PROB_NODATA),
            ]
            run_tiles(
                self.bundle,
                self.plan,
                prob_dst,
                mask_dst,
                self.threshold,
                self.options.batch_size or default_batch_size(self.bundle.device),
                self.options.tta,
                self.quicklook,
                sinks,
            )
        return prob_levels, mask_levels

    def cogs(self, levels: tuple[Pyramid, Pyramid]) -> float:
        """Assemble both COGs from the temporary rasters and their levels; returns seconds."""
        t0 = time.perf_counter()
        prob_desc, mask_desc = self.descriptions
        with rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(self.plan)):
            write_cog(
                self.work / "prob.tif",
                self.final["prob"],
                pyramid=levels[0],
                description=prob_desc,
                u8_steps=PROB_U8_STEPS if self.options.prob_dtype == "uint8" else None,
            )
            write_cog(
                self.work / "mask.tif", self.final["mask"], pyramid=levels[1], description=mask_desc
            )
        return time.perf_counter() - t0

    def vectors_and_overlay(self) -> list[Plant]:
        """Merge the plants cut by tile rows, write the vector files and the overlay."""
        crs = self.plan.info.crs
        plants = self.builder.finish(self.work / "prob.tif")
        write_plants(self.final["plants"], plants, crs, driver="GPKG")
        if "geojson" in self.final:
            write_plants(self.final["geojson"], plants, crs, driver="GeoJSON", to_wgs84=True)
        if "overlay" in self.final:
            write_overlay(
                self.final["overlay"],
                self.plan,
                plants,
                self.options.overlay_max_side,
                self.quicklook,
            )
        return plants


@contextlib.contextmanager
def _work_dir(out: Path, stem: str) -> Iterator[Path]:
    """A temporary folder for one scene's intermediate rasters, removed in any case."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{stem}.work-", dir=out))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write output here ({exc.strerror})") from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
        plan: a tiling already made by :func:`~pvdetect.inference.tiling.plan_scene`.

    Returns:
        What was written. Nothing is left behind for the scene if anything fails.
    """
    options = options or PredictOptions()
    start = time.perf_counter()
    scene, out = Path(scene_path), Path(out_dir)
    plan = plan or plan_scene(bundle, scene, options)
    _prepare_out_dir(out)
    threshold = float(options.threshold if options.threshold is not None else bundle.meta.threshold)
    paths = output_paths(out, scene.stem, options)
    stages = _Stages(start)
    with (
        _work_dir(out, scene.stem) as work,
        contextlib.ExitStack() as stack,
        rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(plan), GDAL_NUM_THREADS="ALL_CPUS"),
    ):
        final = {k: stack.enter_context(atomic_output(p)) for k, p in paths.items()}
        job = _SceneRun(bundle, plan, options, threshold, work, final)
        levels = job.tiles()
        stages.lap("tiles")
        # the COG copies (GDAL, off the GIL) run beside polygons and overlay, which read the
        # temporary rasters; on an error, leaving the block waits for the copies
        with ThreadPoolExecutor(1, thread_name_prefix="pv-cog") as pool:
            cog_job = pool.submit(job.cogs, levels)
            plants = job.vectors_and_overlay()
            stages.lap("vectors_overlay")
            stages.timings["cog"] = cog_job.result()
        stages.lap("cog_wait")
    return _result(scene, plan, plants, paths, time.perf_counter() - start, stages.timings)


def _result(
    scene: Path,
    plan: ScenePlan,
    plants: list[Plant],
    paths: dict[str, Path],
    seconds: float,
    timings: dict[str, Any],
) -> SceneResult:
    return SceneResult(
        scene=scene,
        width=plan.info.width,
        height=plan.info.height,
        plants=len(plants),
        total_ha=float(sum(p.area_ha for p in plants)),
        seconds=seconds,
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

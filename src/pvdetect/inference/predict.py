"""Whole-scene prediction: tiled inference with bounded memory, rasters, polygons and overlays.

For each scene ``<stem>.tif`` the output folder receives

- ``<stem>_prob.tif``: PV probability (float32, nodata -9999), cloud-optimised GeoTIFF, with
  its QGIS style ``<stem>_prob.qml``;
- ``<stem>_mask.tif``: binary mask at the bundle's threshold (uint8, 1 = PV, nodata 255), COG
  with a colour table and overviews that keep every plant, and ``<stem>_mask.qml``;
- ``<stem>_plants.gpkg``: one polygon per plant (``id``, ``area_m2``, ``area_ha``,
  ``mean_prob``, ``max_prob``, ``lon``, ``lat``, ``scene``, ``date``, ``threshold``, ``model``)
  in the scene's CRS with its QGIS style in ``layer_styles``, and ``<stem>_plants.geojson``
  (EPSG:4326, style ``<stem>_plants.qml``) with ``--geojson``;
- ``<stem>_overlay.png``: the RGB scene (2-98 % stretch) with plant outlines, legend, scale bar
  and corner coordinates, at most ~2048 px, georeferenced by ``<stem>_overlay.pgw`` and
  ``<stem>_overlay.png.aux.xml``;

plus ``summary.csv`` over all scenes ever predicted into the folder
(:mod:`pvdetect.inference.summary`) and, from the command line, ``pvdetect.log``.

Before a scene is predicted its values are compared with the training data
(:mod:`pvdetect.inference.input_check`): a warning, or with ``strict`` an error before
anything is written.

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
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio

from pvdetect import logs
from pvdetect.data.acquisition import acquisition_date
from pvdetect.data.raster import geotiff_profile
from pvdetect.errors import ConfigError, DataError
from pvdetect.inference.aoi import Aoi, clip_plants, read_aoi
from pvdetect.inference.cog import Pyramid, write_cog
from pvdetect.inference.colours import OUTLINE_RGB
from pvdetect.inference.input_check import InputCheck, checked_scene, describe_plan
from pvdetect.inference.options import PredictOptions
from pvdetect.inference.overlay import QuickLook, write_overlay
from pvdetect.inference.plants import Plant, write_plants
from pvdetect.inference.styles import mask_qml, plants_qml, probability_qml
from pvdetect.inference.summary import SUMMARY_FIELDS, SceneResult, scene_line, update_summary
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
from pvdetect.inference.vectorize import PlantBuilder
from pvdetect.inference.workfiles import has_zstd, open_write, prepare_out_dir, work_dir
from pvdetect.io import atomic_output, disk_full_guard
from pvdetect.staging import remove_stale_in

if TYPE_CHECKING:
    from pvdetect.model.bundle import Bundle

__all__ = [
    "MASK_NODATA",
    "PROB_NODATA",
    "PredictOptions",
    "SUMMARY_FIELDS",
    "SceneResult",
    "expand_inputs",
    "model_name",
    "output_paths",
    "predict_scene",
    "predict_scenes",
    "write_summary",
]

SKIP_SUFFIXES = ("_mask", "_prob")
#: GDAL block cache while predicting: a floor, plus a few tile rows of input and output blocks
GDAL_CACHE_MIN_BYTES = 32 * 1024 * 1024
#: colour table of the mask: background and nodata transparent, PV in the outline colour
MASK_COLORS = {0: (0, 0, 0, 0), 1: (*OUTLINE_RGB, 255), MASK_NODATA: (0, 0, 0, 0)}

log = logging.getLogger(__name__)


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
        "prob_style": out_dir / f"{stem}_prob.qml",
        "mask": out_dir / f"{stem}_mask.tif",
        "mask_style": out_dir / f"{stem}_mask.qml",
        "plants": out_dir / f"{stem}_plants.gpkg",
    }
    if options.geojson:
        paths["geojson"] = out_dir / f"{stem}_plants.geojson"
        paths["geojson_style"] = out_dir / f"{stem}_plants.qml"
    if options.overlay:
        paths["overlay"] = out_dir / f"{stem}_overlay.png"
        paths["overlay_world"] = out_dir / f"{stem}_overlay.pgw"
        paths["overlay_aux"] = out_dir / f"{stem}_overlay.png.aux.xml"
    return paths


def _work_profiles(plan: ScenePlan) -> tuple[dict, dict]:
    """GeoTIFF profiles of the temporary full-resolution rasters (fast, multi-threaded)."""
    common = dict(
        height=plan.out_height,
        width=plan.out_width,
        count=1,
        crs=plan.info.crs,
        transform=plan.out_transform,
        compress="zstd" if has_zstd() else None,
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
    attrs: dict[str, object] = field(default_factory=dict)  # per-plant scene attributes
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

    def _progress(self, bar: Any) -> Callable[[int], None]:
        """After each tile row: the terminal bar, and the caller's ``options.progress`` hook
        with (tiles done, tiles in all)."""
        hook = self.options.progress
        done = [0]

        def update(n: int) -> None:
            bar.update(n)
            done[0] += n
            if hook is not None:
                hook(done[0], self.plan.n_active)

        return update

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
            open_write(self.work / "prob.tif", prob_prof) as prob_dst,
            open_write(self.work / "mask.tif", mask_prof) as mask_dst,
            Pyramid(self.work, "prob", level_prof, "average") as prob_levels,
            Pyramid(self.work, "mask", mask_prof, "max") as mask_levels,
        ):
            prob_dst.set_band_description(1, prob_desc)
            mask_dst.set_band_description(1, mask_desc)
            sinks: list[RowSink] = [
                lambda row0, prob, mask: prob_levels.add_rows(row0, stored(prob)),
                lambda row0, prob, mask: mask_levels.add_rows(row0, mask),
                lambda row0, prob, mask: self.builder.add_rows(row0, mask, prob, PROB_NODATA),
            ]
            bar = logs.progress(total=self.plan.n_active, desc=self.plan.path.name, unit="tile")
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
                progress=self._progress(bar),
            )
            bar.close()
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
                self.work / "mask.tif",
                self.final["mask"],
                pyramid=levels[1],
                description=mask_desc,
                colormap=MASK_COLORS,
            )
        return time.perf_counter() - t0

    def vectors_and_overlay(self) -> list[Plant]:
        """Merge the plants cut by tile rows, write the vector files, styles and the overlay."""
        crs = self.plan.info.crs
        plants = self.builder.finish(self.work / "prob.tif")
        if self.plan.aoi is not None:
            plants = clip_plants(
                plants, self.plan.aoi, self.builder.areas, self.options.min_area_m2
            )
        style = plants_qml()
        write_plants(
            self.final["plants"], plants, crs, driver="GPKG", attrs=self.attrs, style_qml=style
        )
        if "geojson" in self.final:
            write_plants(
                self.final["geojson"], plants, crs, driver="GeoJSON", to_wgs84=True,
                attrs=self.attrs,
            )  # fmt: skip
            self.final["geojson_style"].write_text(style, encoding="utf-8")
        self.final["prob_style"].write_text(probability_qml(), encoding="utf-8")
        self.final["mask_style"].write_text(mask_qml(self.threshold), encoding="utf-8")
        if "overlay" in self.final:
            write_overlay(
                self.final["overlay"],
                self.plan,
                plants,
                self.options.overlay_max_side,
                self.quicklook,
                aoi=self.plan.aoi,
                georef=(self.final["overlay_world"], self.final["overlay_aux"]),
            )
        return plants


def model_name(bundle: Bundle, path: str | os.PathLike | None = None) -> str:
    """``arch/encoder`` of a bundle and, when known, its folder (``unet/resnet18 run1/bundle``)."""
    name = f"{bundle.meta.arch}/{bundle.meta.encoder}"
    if path is None:
        return name
    p = Path(path).resolve()
    where = f"{p.parent.name}/{p.name}" if p.stem == "bundle" and p.parent.name else p.name
    return f"{name} {where}"


def predict_scene(
    bundle: Bundle,
    scene_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    plan: ScenePlan | None = None,
    *,
    check: InputCheck | None = None,
    model: str | None = None,
) -> SceneResult:
    """Predict one scene and write its rasters, polygons, styles and overlay into ``out_dir``.

    Args:
        bundle: a loaded bundle (on the device to use).
        scene_path: GeoTIFF with the bundle's bands, CRS and transform.
        out_dir: output folder (created if needed).
        options: prediction options; defaults from the bundle.
        plan: a tiling already made by :func:`~pvdetect.inference.tiling.plan_scene`.
        check: the scene's input check when already made (else it is made here).
        model: the model attribute of the plants (default :func:`model_name` of the bundle).

    Returns:
        What was written. Nothing is left behind for the scene if anything fails.
    """
    options = options or PredictOptions()
    start = time.perf_counter()
    scene, out = Path(scene_path), Path(out_dir)
    plan = plan or plan_scene(bundle, scene, options)
    if check is None:
        check = checked_scene(bundle, plan, options)
    prepare_out_dir(out)
    threshold = float(options.threshold if options.threshold is not None else bundle.meta.threshold)
    paths = output_paths(out, scene.stem, options)
    date = acquisition_date(plan.info.tags, scene)
    attrs: dict[str, object] = {
        "scene": scene.name,
        "date": date,
        "threshold": threshold,
        "model": model or model_name(bundle),
    }
    stages = _Stages(start)
    with (
        disk_full_guard(out),
        work_dir(out, scene.stem) as work,
        contextlib.ExitStack() as stack,
        rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(plan), GDAL_NUM_THREADS="ALL_CPUS"),
    ):
        final = {k: stack.enter_context(atomic_output(p)) for k, p in paths.items()}
        job = _SceneRun(bundle, plan, options, threshold, work, final, attrs)
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
    res = _result(scene, plan, plants, paths, time.perf_counter() - start, stages.timings)
    res.date, res.input_check = date, check.summary
    res.threshold, res.model = threshold, str(attrs["model"])
    return res


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


#: merges results into ``summary.csv`` (:func:`pvdetect.inference.summary.update_summary`)
write_summary = update_summary


def predict_scenes(
    bundle_path: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    log_file: str | None = None,
) -> list[SceneResult]:
    """Load a bundle and predict every scene; updates ``summary.csv`` after each scene.

    Every scene is planned and its values checked against the bundle before any is
    predicted (with ``options.strict`` a suspicious scene stops the run before anything is
    written). If a scene fails, the scenes finished before it keep their files and rows in
    ``summary.csv`` and the error is raised. ``log_file`` (a name) appends this run's messages
    to that file in ``out_dir`` once it exists (the command line's ``pvdetect.log``).
    """
    from pvdetect.device import resolve_device
    from pvdetect.model.bundle import load_bundle

    options = options or PredictOptions()
    out = Path(out_dir)
    scenes = expand_inputs(inputs)
    aoi: Aoi | None = read_aoi(options.aoi) if options.aoi is not None else None
    device = resolve_device(options.device)
    bundle = load_bundle(Path(bundle_path), device=device)
    model = model_name(bundle, bundle_path)
    plans = [plan_scene(bundle, s, options, aoi) for s in scenes]
    checks = [checked_scene(bundle, plan, options) for plan in plans]
    prepare_out_dir(out)
    remove_stale_in(out)  # temporaries of an earlier killed run into this folder
    if log_file:
        logs.attach_file(out / log_file)
    log.debug("predict: bundle %s (%s) on %s, %d scene(s)", bundle_path, model, device, len(plans))
    for plan in plans:
        describe_plan(plan)
    results: list[SceneResult] = []
    n = len(plans)
    bar = logs.progress(total=n, desc="scenes", unit="scene", leave=False) if n > 1 else None
    for k, (plan, check) in enumerate(zip(plans, checks, strict=True), start=1):
        res = predict_scene(bundle, plan.path, out, options, plan=plan, check=check, model=model)
        results.append(res)
        update_summary(out / "summary.csv", [res])
        log.info("%s", scene_line(res, k, n))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results

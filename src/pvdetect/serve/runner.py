"""What one job does: imagery of the area, prediction, map pictures, report, manifest.

:func:`run_job` is the whole job and knows nothing of the server: it takes the validated
request, the job's folder, a progress callback and a :class:`RunContext` (the loaded bundle,
the source, the prediction options), and returns the job's :class:`JobResult`, which it has
also written as ``manifest.json``, last, once every other output is complete. A callback that
raises (a cancelled job) stops the job at the next tile row or imagery block; every output is
written under a temporary name, so a stopped job leaves no half-written file.

The job folder::

    acquire/area.tif, area.json   catalog: the median composite (COG) and its sidecar
    area.tif                      scenes: the area cut from the scenes (GeoTIFF); catalog with
                                  a polygon: the composite with nodata outside the polygon
    area_prob.tif, area_mask.tif  probability and mask (COGs)
    area_plants.gpkg              plants in the area's CRS; area_plants.geojson in WGS 84
    area_overlay.png              the imagery with the plants outlined
    layers/composite.png, layers/mask.png   map pictures in Web Mercator
    report.html                   the report, self-contained
    manifest.json                 the result (written last)
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pvdetect.data.raster import raster_info
from pvdetect.errors import DataError
from pvdetect.inference.options import PredictOptions
from pvdetect.io import write_json
from pvdetect.serve.layers import composite_layer, mask_layer
from pvdetect.serve.models import JobRequest, JobResult, PointArea, PolygonArea
from pvdetect.serve.mosaic import AreaGrid, area_grid, build_mosaic, covering
from pvdetect.serve.report import plant_rows, write_report
from pvdetect.serve.sources import CatalogSource, ScenesSource, Source, footprint_of

if TYPE_CHECKING:
    from pvdetect.inference.predict import SceneResult
    from pvdetect.inference.tiling import ScenePlan
    from pvdetect.model.bundle import Bundle
    from pvdetect.serve.settings import ServeSettings

__all__ = [
    "MANIFEST",
    "PREDICTING",
    "READING",
    "SEARCHING",
    "WRITING",
    "Reporter",
    "RunContext",
    "load_context",
    "run_job",
]

MANIFEST = "manifest.json"
SEARCHING = "searching"
READING = "reading imagery"
PREDICTING = "predicting"
WRITING = "writing outputs"
_BLOCKS = re.compile(r"composite: (\d+)/(\d+) block")


class Reporter(Protocol):
    """Receives a job's progress; raising stops the job."""

    def __call__(
        self,
        stage: str,
        done: int | None = None,
        total: int | None = None,
        unit: str | None = None,
        message: str | None = None,
    ) -> None: ...


@dataclass
class RunContext:
    """What every job of a worker shares.

    Attributes:
        bundle: The loaded bundle, on its device.
        bundle_name: Its file or folder name (for the report).
        source: Where imagery comes from.
        options: Prediction options (the job adds the GeoJSON, overlay and progress).
        memory_mb: Memory budget of a catalog composite.
        max_items: Catalog items used at most.
    """

    bundle: Bundle
    bundle_name: str
    source: Source
    options: PredictOptions
    memory_mb: float = 1024.0
    max_items: int = 60


def load_context(settings: ServeSettings) -> RunContext:
    """Load the bundle onto the settings' device: once per worker."""
    from pvdetect.device import resolve_device
    from pvdetect.model.bundle import load_bundle

    device = resolve_device(settings.device)
    bundle = load_bundle(settings.bundle, device=device)
    options = PredictOptions(batch_size=settings.batch_size, device=str(device))
    return RunContext(
        bundle=bundle,
        bundle_name=settings.bundle.name,
        source=settings.source,
        options=options,
        memory_mb=settings.memory_mb,
        max_items=settings.max_items,
    )


@dataclass
class _Imagery:
    """The area's raster and what made it."""

    image: Path
    info: dict[str, Any]
    warnings: list[str]
    files: dict[str, Path]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _grid_of(path: Path) -> AreaGrid:
    info = raster_info(path)
    assert info.crs is not None
    return AreaGrid(info.crs, info.transform, info.width, info.height)


def _catalog_imagery(
    request: JobRequest, source: CatalogSource, job_dir: Path, progress: Reporter, ctx: RunContext
) -> _Imagery:
    """The median composite of the date window, cut to a polygon area when there is one."""
    from pvdetect.acquire.pipeline import acquire
    from pvdetect.acquire.request import AcquireRequest

    area = request.area
    assert request.start is not None and request.end is not None
    square = isinstance(area, PointArea) and area.is_square()
    progress(SEARCHING, message=f"searching {source.label}")
    acquire_request = AcquireRequest(
        catalog=source.catalog,
        collection=source.collection,
        bbox=None if square else area.bbox(),
        point=(area.lon, area.lat) if square else None,  # type: ignore[union-attr]
        size_km=area.sides_km()[0] if square else None,  # type: ignore[union-attr]
        start=request.start,
        end=request.end,
        name="area",
        max_items=ctx.max_items,
    )

    def log(line: str) -> None:
        match = _BLOCKS.search(line)
        if match:
            progress(READING, int(match[1]), int(match[2]), "blocks")
        elif line.startswith("found"):
            progress(READING, 0, None, "blocks", message=line)

    result = acquire(acquire_request, job_dir / "acquire", memory_mb=ctx.memory_mb, log=log)
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    image = result.image
    if isinstance(area, PolygonArea):
        progress(READING, message="setting pixels outside the polygon to nodata")
        image = build_mosaic(
            [footprint_of(image)], _grid_of(image), job_dir / "area.tif", polygon=area.polygon()
        ).path
    items = [
        {
            "id": it.get("id"),
            "datetime": it.get("datetime"),
            "clear": it.get("clear_fraction"),
        }
        for it in sidecar.get("items", [])
    ]
    info = {
        "kind": "catalog",
        "label": source.label,
        "items": items,
        "dates": [d.get("date") for d in sidecar.get("dates", [])],
        "valid_fraction": result.valid_fraction,
    }
    files = {"composite": result.image, "sidecar": result.sidecar}
    if image != result.image:
        files["area"] = image
    return _Imagery(image, info, list(result.warnings), files)


def _scene_imagery(
    request: JobRequest, source: ScenesSource, job_dir: Path, progress: Reporter
) -> _Imagery:
    """The area cut from the local scenes that cover it."""
    area = request.area
    progress(SEARCHING, message=f"looking for scenes in {source.folder}")
    footprints, skipped = source.footprints()
    hits = covering(footprints, area.bbox(), area.polygon())
    if not hits:
        box = ", ".join(f"{v:.5f}" for v in area.bbox())
        raise DataError(f"{source.folder}: no scene covers the area {box}")
    centre_sides = None
    if isinstance(area, PointArea):
        w, h = area.sides_km()
        centre_sides = (area.lon, area.lat, w * 1000.0, h * 1000.0)
    grid = area_grid(hits[0], area.bbox(), centre_sides)
    progress(READING, 0, None, "blocks", message=f"{len(hits)} scene(s) cover the area")
    mosaic = build_mosaic(
        hits,
        grid,
        job_dir / "area.tif",
        polygon=area.polygon(),
        progress=lambda done, total: progress(READING, done, total, "blocks"),
    )
    info = {
        "kind": "scenes",
        "label": source.label,
        "scenes": [p.name for p in mosaic.scenes],
    }
    return _Imagery(mosaic.path, info, skipped + mosaic.warnings, {"area": mosaic.path})


def _area_facts(request: JobRequest, image: Path) -> dict[str, Any]:
    area = request.area
    grid = _grid_of(image)
    epsg = grid.crs.to_epsg()
    width_km, height_km = area.extent_km()
    if isinstance(area, PointArea):
        description = f"{width_km:g} x {height_km:g} km around {area.lon:.5f}, {area.lat:.5f}"
    elif isinstance(area, PolygonArea):
        description = f"a GeoJSON {area.geometry['type']}"
    else:
        description = "a box of WGS 84 degrees"
    return {
        "type": area.type,
        "description": description,
        "request": area.model_dump(mode="json"),
        "bbox": list(area.bbox()),
        "width_km": width_km,
        "height_km": height_km,
        "crs": f"EPSG:{epsg}" if epsg else grid.crs.to_wkt(),
        "width_px": grid.width,
        "height_px": grid.height,
        "resolution_m": abs(grid.transform.a),
    }


_LABELS = {
    "composite": "Median composite (COG, int16 reflectance x 10000)",
    "sidecar": "Composite sidecar (JSON: items, dates, offsets applied)",
    "area": "Imagery of the area as predicted (GeoTIFF)",
    "probability": "PV probability (COG, float32)",
    "mask": "PV mask (COG, 1 = PV)",
    "plants": "Plants (GeoPackage, the area's CRS)",
    "plants_geojson": "Plants (GeoJSON, WGS 84)",
    "overlay": "Overlay picture (PNG)",
    "report": "Report (HTML)",
}


def _files(job_dir: Path, kinds: dict[str, Path | None]) -> list[dict[str, Any]]:
    return [
        {
            "name": path.relative_to(job_dir).as_posix(),
            "kind": kind,
            "label": _LABELS[kind],
            "bytes": path.stat().st_size,
        }
        for kind, path in kinds.items()
        if path is not None and path.is_file()
    ]


def run_job(
    request: JobRequest, job_dir: Path, progress: Reporter, context: RunContext
) -> JobResult:
    """Run one job in ``job_dir`` (see the module docstring); returns its manifest.

    Raises:
        DataError, ConfigError, NetworkError, OutputError, BundleError: The job cannot be
            done (the message says why). Whatever ``progress`` raises.
    """
    from pvdetect.inference.predict import predict_scene
    from pvdetect.inference.tiling import plan_scene

    t0 = time.perf_counter()
    job_dir.mkdir(parents=True, exist_ok=True)
    source = context.source
    if isinstance(source, CatalogSource):
        imagery = _catalog_imagery(request, source, job_dir, progress, context)
    else:
        imagery = _scene_imagery(request, source, job_dir, progress)
    bundle = context.bundle
    plan = plan_scene(bundle, imagery.image, context.options)
    progress(PREDICTING, 0, plan.n_tiles, "tiles")

    def on_tiles(done: int, total: int) -> None:
        progress(PREDICTING, done, total, "tiles")
        if done >= total:
            progress(WRITING, message="rasters, plants and overlay")

    options = dataclasses.replace(context.options, geojson=True, overlay=True, progress=on_tiles)
    scene = predict_scene(bundle, imagery.image, job_dir, options, plan=plan)
    progress(WRITING, message="map pictures and report")
    return _finish(request, job_dir, context, imagery, scene, plan, time.perf_counter() - t0)


def _finish(
    request: JobRequest,
    job_dir: Path,
    context: RunContext,
    imagery: _Imagery,
    scene: SceneResult,
    plan: ScenePlan,
    seconds: float,
) -> JobResult:
    """Map pictures, report and, last, the manifest of a predicted area."""
    layers = {
        "composite": {
            "name": "layers/composite.png",
            "bounds": composite_layer(imagery.image, job_dir / "layers/composite.png", plan.rgb),
        },
        "mask": {
            "name": "layers/mask.png",
            "bounds": mask_layer(scene.mask_path, job_dir / "layers/mask.png"),
        },
    }
    assert scene.geojson_path is not None
    plants = plant_rows(json.loads(scene.geojson_path.read_text(encoding="utf-8")))
    meta = context.bundle.meta
    threshold = context.options.threshold
    manifest: dict[str, Any] = {
        "id": job_dir.name,
        "label": request.label,
        "finished": _now(),
        "seconds": seconds,
        "plants": scene.plants,
        "total_ha": scene.total_ha,
        "area": _area_facts(request, imagery.image),
        "dates": (
            {"start": request.start.isoformat(), "end": request.end.isoformat()}
            if request.start is not None and request.end is not None
            else None
        ),
        "imagery": imagery.info,
        "model": {
            "bundle": context.bundle_name,
            "arch": meta.arch,
            "encoder": meta.encoder,
            "threshold": float(threshold if threshold is not None else meta.threshold),
            "tile": plan.tile,
        },
        "files": [],
        "layers": layers,
        "plants_geojson": scene.geojson_path.name,
        "report": "report.html",
        "warnings": imagery.warnings,
    }
    report = write_report(job_dir / "report.html", manifest, plants, scene.overlay_path)
    manifest["files"] = _files(
        job_dir,
        {
            **imagery.files,
            "probability": scene.prob_path,
            "mask": scene.mask_path,
            "plants": scene.plants_path,
            "plants_geojson": scene.geojson_path,
            "overlay": scene.overlay_path,
            "report": report,
        },
    )
    result = JobResult.model_validate(manifest)
    write_json(job_dir / MANIFEST, result.model_dump(mode="json"))
    return result

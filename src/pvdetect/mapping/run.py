"""``pvdetect map``: a region's plants from many scenes, tile by tile, on a Dask cluster.

:func:`map_region` plans the tiles (:mod:`~pvdetect.mapping.grid`), records the run
(:mod:`~pvdetect.mapping.state`), submits one task per tile that is not done yet
(:func:`~pvdetect.mapping.tasks.run_tile`, with Dask retries; a worker that dies is replaced and
its tile redone), and when every tile is done writes the map's layers in ``DIR``:

- ``plants.gpkg``: every plant once, in the output CRS (:mod:`~pvdetect.mapping.merge`);
- ``prob.vrt``, ``mask.vrt``: mosaics of the tiles' COGs (:mod:`~pvdetect.mapping.rasters`);
- ``quicklook.png``: the whole map, plants outlined (:mod:`~pvdetect.mapping.quicklook`);
- ``summary.csv``: per tile and in total: plants, hectares, valid share, megapixels, seconds.

The layers are rebuilt from the tiles' files in tile order, so a resumed run gives the same
layers as one that was never interrupted.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import shapely
from shapely.geometry.base import BaseGeometry

from pvdetect.errors import ConfigError, PVDetectError
from pvdetect.inference.options import PredictOptions
from pvdetect.io import atomic_output, first_line
from pvdetect.mapping.cluster import ClusterInfo
from pvdetect.mapping.grid import Tile, plan_tiles
from pvdetect.mapping.progress import Progress, format_eta
from pvdetect.mapping.sources import TileSource
from pvdetect.mapping.state import RunState, bundle_fingerprint
from pvdetect.mapping.tasks import TileJob, run_tile, tile_files

log = logging.getLogger(__name__)

__all__ = ["MapConfig", "MapResult", "map_region", "write_summary"]

SUMMARY_FIELDS = (
    "tile", "plants", "hectares", "valid_share", "megapixels", "seconds", "input_check"
)  # fmt: skip


@dataclass
class MapConfig:
    """What ``pvdetect map`` was asked for.

    Attributes:
        bundle: the model bundle (folder or .pvb; torch or ONNX).
        out: the map's folder.
        tile_km: side of a grid cell in km.
        resolution: pixel size in metres.
        margin: pixels of context around each cell (None: the bundle's tile overlap).
        crs: CRS of ``plants.gpkg`` (and of the mosaics when the map spans several zones).
        aoi: area of interest, EPSG:4326 (None: wherever the scenes reach).
        options: prediction options (threshold, minimum area, holes, TTA, device ...).
        resume, overwrite: continue the run in ``out`` / replace it.
        retries: Dask retries of a failing tile.
        resources: Dask worker resources each tile needs (e.g. ``{"GPU": 1}``).
        quicklook_size: long side of ``quicklook.png``.
    """

    bundle: Path
    out: Path
    tile_km: float = 20.0
    resolution: float = 10.0
    margin: int | None = None
    crs: str = "EPSG:4326"
    aoi: BaseGeometry | None = None
    options: PredictOptions = field(default_factory=PredictOptions)
    resume: bool = False
    overwrite: bool = False
    retries: int = 2
    resources: dict[str, float] | None = None
    quicklook_size: int = 2048


@dataclass
class MapResult:
    """What :func:`map_region` did."""

    out: Path
    tiles: int
    done_before: int
    plants: int
    hectares: float
    seconds: float
    megapixels: float
    files: dict[str, Path]


def _tile_options(options: PredictOptions) -> PredictOptions:
    """Per-tile prediction: plants of any size (filtered after the merge), uint8 COGs."""
    return replace(
        options,
        min_area_m2=0.0,
        overlay=False,
        geojson=False,
        upscaled_output=False,
        prob_dtype="uint8",
    )


def _identity(cfg: MapConfig, source: TileSource, margin: int, threshold: float) -> dict:
    """What decides the map's outputs (compared on ``--resume``)."""
    o = cfg.options
    return {
        "bundle": bundle_fingerprint(Path(cfg.bundle)),
        "source": source.describe(),
        "aoi": shapely.to_wkt(cfg.aoi, rounding_precision=9) if cfg.aoi is not None else None,
        "tile_km": cfg.tile_km,
        "resolution": cfg.resolution,
        "margin": margin,
        "crs": cfg.crs,
        "threshold": threshold,
        "min_area_m2": o.min_area_m2,
        "max_hole_m2": o.max_hole_m2,
        "tta": o.tta,
        "tile": o.tile,
        "overlap": o.overlap,
    }


def _task_error(tile: Tile, exc: BaseException) -> PVDetectError:
    if isinstance(exc, PVDetectError):
        return exc
    name = type(exc).__name__
    if name == "KilledWorker":
        return PVDetectError(f"tile {tile.id}: the workers running it died repeatedly ({name})")
    return PVDetectError(f"tile {tile.id}: {name}: {first_line(exc)}")


def _check(cfg: MapConfig) -> None:
    import pyproj

    if cfg.retries < 0:
        raise ConfigError(f"--retries {cfg.retries}: must be >= 0")
    if cfg.quicklook_size < 16:
        raise ConfigError(f"--quicklook-size {cfg.quicklook_size}: must be >= 16")
    try:
        pyproj.CRS.from_user_input(cfg.crs)
    except pyproj.exceptions.CRSError as exc:
        raise ConfigError(f"--crs {cfg.crs}: {first_line(exc)}") from None


def _plan(cfg: MapConfig, source: TileSource, margin: int) -> list[tuple[Tile, TileSource]]:
    """The map's tiles with the part of the source each needs."""
    area = source.footprint()
    if area is None:
        if cfg.aoi is None:
            raise ConfigError("the imagery source needs an area: give --bbox or --aoi")
        area = cfg.aoi
    elif cfg.aoi is not None:
        area = shapely.intersection(area, cfg.aoi)
    if area.is_empty or area.area <= 0:
        raise ConfigError("the scenes do not reach into the area of interest")
    planned = []
    for tile in plan_tiles(area, cfg.tile_km, cfg.resolution, margin, cfg.aoi):
        sub = source.for_tile(tile)
        if sub is not None:
            planned.append((tile, sub))
    if not planned:
        raise ConfigError("no tile of the area has imagery")
    return planned


def map_region(
    cfg: MapConfig,
    source: TileSource,
    client: Any,
    cluster: ClusterInfo | None = None,
    stream: TextIO | None = None,
) -> MapResult:
    """Map the region of ``source`` (and ``cfg.aoi``) on the Dask ``client``.

    Raises:
        ConfigError, OutputError: bad arguments, or a folder that may not be used (before
            any tile runs).
        PVDetectError: a tile failed after its retries (the finished tiles stay recorded:
            ``--resume`` continues).
    """
    from pvdetect.model.bundle import read_meta

    stream = stream if stream is not None else sys.stderr
    start = time.perf_counter()
    _check(cfg)
    meta = read_meta(cfg.bundle)
    margin = int(cfg.margin if cfg.margin is not None else meta.overlap)
    threshold = float(
        cfg.options.threshold if cfg.options.threshold is not None else meta.threshold
    )
    options = _tile_options(replace(cfg.options, threshold=threshold))
    planned = _plan(cfg, source, margin)
    tiles = [t for t, _ in planned]
    state = RunState(cfg.out)
    continued = state.start(
        _identity(cfg, source, margin, threshold), resume=cfg.resume, overwrite=cfg.overwrite
    )
    done = state.done({t.id for t in tiles}) if continued else {}
    todo = [(t, s) for t, s in planned if t.id not in done]
    where = cluster.describe() if cluster is not None else "Dask client"
    print(
        f"pvdetect map: {len(tiles)} tiles of {cfg.tile_km:g} km ({len(done)} done before), "
        f"{where}",
        file=stream,
        flush=True,
    )
    records = dict(done)
    records.update(_run_tiles(cfg, todo, options, client, cluster, len(tiles), len(done), stream))
    report_input_checks(records)
    files = assemble(cfg, tiles, records, threshold)
    seconds = time.perf_counter() - start
    mp = sum(r["megapixels"] for r in records.values())
    plants, ha = files.pop("_plants"), files.pop("_hectares")
    print(
        f"pvdetect map: {plants} plants, {ha:.2f} ha over {mp:.1f} MP in {format_eta(seconds)}",
        file=stream,
        flush=True,
    )
    return MapResult(Path(cfg.out), len(tiles), len(done), plants, ha, seconds, mp, files)


def _run_tiles(
    cfg: MapConfig,
    todo: Sequence[tuple[Tile, TileSource]],
    options: PredictOptions,
    client: Any,
    cluster: ClusterInfo | None,
    total: int,
    done: int,
    stream: TextIO,
) -> dict[str, dict[str, Any]]:
    """Run the tasks of the tiles not done yet; returns their records."""
    from distributed import as_completed

    if not todo:
        return {}
    token = uuid.uuid4().hex[:8]
    threads = cluster.threads if cluster is not None else None
    per_host = cluster.workers_per_host if cluster is not None else None
    futures = {}
    for tile, sub in todo:
        job = TileJob(
            tile=tile,
            source=sub,
            bundle=str(Path(cfg.bundle).resolve()),
            options=options,
            min_area_m2=cfg.options.min_area_m2,
            out_dir=str(Path(cfg.out).resolve()),
            threads=threads,
            workers_per_host=per_host or None,
        )
        fut = client.submit(
            run_tile,
            job,
            key=f"pvmap-{tile.id}-{token}",
            retries=cfg.retries,
            pure=False,
            resources=cfg.resources,
        )
        futures[fut.key] = (fut, tile)
    progress = Progress(total, done, stream)
    records: dict[str, dict[str, Any]] = {}
    try:
        for fut in as_completed([f for f, _ in futures.values()]):
            tile = futures[fut.key][1]
            if fut.status == "error":
                raise _task_error(tile, fut.exception())
            rec = fut.result()
            records[tile.id] = rec
            progress.update(rec["megapixels"])
    finally:
        pending = [f for f, _ in futures.values() if not f.done()]
        if pending:
            client.cancel(pending)
    return records


def _flagged(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tile records whose values looked unlike the training data, by tile id."""
    return sorted(
        (r for r in records if r.get("input_check", "").startswith("warning")),
        key=lambda r: r["tile"],
    )


def report_input_checks(records: dict[str, dict[str, Any]]) -> None:
    """One warning for all tiles whose values look unlike the training data."""
    flagged = _flagged(records.values())
    if flagged:
        others = [r["tile"] for r in flagged[1:]]
        more = " ..." if len(others) > 3 else ""
        also = f"; also {', '.join(others[:3])}{more}" if others else ""
        log.warning(
            "%d of %d tiles: %s%s (summary.csv: input_check per tile)",
            len(flagged), len(records), flagged[0]["input_message"], also,
        )  # fmt: skip


def write_summary(path: Path, tiles: Sequence[Tile], records: dict, plants: int, ha: float) -> Path:
    """``summary.csv``: a row per tile (its pieces) and the total (merged plants)."""
    rows = [records[t.id] for t in tiles]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY_FIELDS)
        for r in rows:
            w.writerow(
                [r["tile"], r["plants"], f"{r['hectares']:.4f}", f"{r['valid_share']:.4f}",
                 f"{r['megapixels']:.4f}", f"{r['seconds']:.2f}", r.get("input_check", "")]
            )  # fmt: skip
        mp = sum(r["megapixels"] for r in rows)
        share = sum(r["valid_share"] * r["megapixels"] for r in rows) / mp if mp else 0.0
        secs = sum(r["seconds"] for r in rows)
        flagged = len(_flagged(rows))
        w.writerow(["total", plants, f"{ha:.4f}", f"{share:.4f}", f"{mp:.4f}", f"{secs:.2f}",
                    f"{flagged} tiles flagged" if flagged else "ok"])  # fmt: skip
    return path


def assemble(
    cfg: MapConfig, tiles: Sequence[Tile], records: dict, threshold: float
) -> dict[str, Any]:
    """Write the map's layers from the finished tiles (see the module docstring)."""
    from rasterio.enums import Resampling

    from pvdetect.inference.styles import mask_qml, plants_qml, probability_qml
    from pvdetect.io import write_text
    from pvdetect.mapping.merge import merge_tiles
    from pvdetect.mapping.pieces import write_pieces
    from pvdetect.mapping.quicklook import write_quicklook
    from pvdetect.mapping.rasters import MosaicTile, write_mosaic

    out = Path(cfg.out)
    plants, crs_wkt = merge_tiles(out, tiles, cfg.crs, cfg.options.min_area_m2)
    files: dict[str, Any] = {
        "plants": write_pieces(
            out / "plants.gpkg", plants, crs_wkt, edge=False, style_qml=plants_qml()
        ),
        # QGIS opens prob.vrt and mask.vrt with the style of the same name beside them
        "prob_style": write_text(out / "prob.qml", probability_qml()),
        "mask_style": write_text(out / "mask.qml", mask_qml(threshold)),
    }
    for kind, desc, resampling in (
        ("prob", "PV probability", Resampling.nearest),
        ("mask", f"PV mask (prob >= {threshold:g})", Resampling.nearest),
    ):
        mt = [
            MosaicTile(tile_files(out, t.id)[kind], t.zone, t.south, t.cell_bounds, t.margin,
                       t.cell_px, t.res)
            for t in tiles
        ]  # fmt: skip
        files[kind] = write_mosaic(mt, out / f"{kind}.vrt", cfg.crs, desc, resampling)
    files["quicklook"] = write_quicklook(
        files["prob"], out / "quicklook.png", plants.geoms, crs_wkt, cfg.quicklook_size
    )
    ha = float(plants.area_m2().sum() / 10000.0) if len(plants) else 0.0
    files["summary"] = write_summary(out / "summary.csv", tiles, records, len(plants), ha)
    files["_plants"], files["_hectares"] = len(plants), ha
    return files

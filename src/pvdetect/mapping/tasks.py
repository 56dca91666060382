"""One tile on a Dask worker: imagery, prediction, the tile's plant pieces, its record.

:func:`run_tile` is the task. It gets a :class:`TileJob` (paths and numbers, never pixels) and

1. has the tile's source write the tile's raster (cell plus margins) into a work folder;
2. checks its values against the training data (:func:`tile_check`, recorded, not logged)
   and predicts it with :func:`~pvdetect.inference.predict.predict_scene` (the scene engine,
   unchanged: tiling, blending, COGs, plant polygons), probabilities stored as uint8;
3. cuts the plants to the region the tile owns (:func:`tile_pieces`): a plant that reaches
   past it becomes pieces whose area and probabilities are measured again on the tile's
   rasters, flagged ``edge`` for the merge; plants inside it are final, and those smaller
   than the minimum area are dropped here;
4. moves the finished files to ``DIR/tiles/<id>/`` in one rename and only then writes
   ``DIR/state/tiles/<id>.json``: a tile counts as done only with every file in place, and a
   task that dies half-way (or is run twice) leaves nothing that counts.

Each worker process loads the bundle once (a per-process cache) on its GPU when it has one
(device ``auto``), and sets its torch threads once.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from rasterio.windows import Window

from pvdetect.errors import DataError, OutputError
from pvdetect.inference.options import PredictOptions
from pvdetect.io import write_json, write_text
from pvdetect.mapping.grid import Tile
from pvdetect.mapping.pieces import Pieces, read_pieces, write_pieces
from pvdetect.mapping.sources import TileSource

if TYPE_CHECKING:
    from pvdetect.inference.input_check import InputCheck
    from pvdetect.inference.tiling import ScenePlan
    from pvdetect.model.bundle import Bundle

__all__ = ["TileJob", "record_path", "run_tile", "tile_dir", "tile_files"]

#: per worker process: loaded bundles by (path, device)
_BUNDLES: dict[tuple[str, str], Bundle] = {}
_THREADS: list[int] = []


@dataclass(frozen=True)
class TileJob:
    """What one task needs.

    Attributes:
        tile: the tile.
        source: the part of the imagery source the tile needs.
        bundle: path of the model bundle (every worker sees it).
        options: prediction options (plants of any size; prob uint8; no overlay).
        min_area_m2: plants inside the tile smaller than this are dropped.
        out_dir: the map's folder.
        threads: torch threads per worker; None: the host's cores shared among the workers
            on it (``workers_per_host``), or left as they are.
        workers_per_host: Dask workers per host address, when the driver knows them.
    """

    tile: Tile
    source: TileSource
    bundle: str
    options: PredictOptions
    min_area_m2: float
    out_dir: str
    threads: int | None = None
    workers_per_host: dict[str, int] | None = None


def tile_dir(out: Path, tile_id: str) -> Path:
    """Folder of a finished tile's files."""
    return Path(out) / "tiles" / tile_id


def tile_files(out: Path, tile_id: str) -> dict[str, Path]:
    """The files of a finished tile: prob and mask COGs, plant pieces."""
    d = tile_dir(out, tile_id)
    return {
        "prob": d / f"{tile_id}_prob.tif",
        "mask": d / f"{tile_id}_mask.tif",
        "plants": d / f"{tile_id}_plants.gpkg",
    }


def record_path(out: Path, tile_id: str) -> Path:
    """The record that says a tile is done."""
    return Path(out) / "state" / "tiles" / f"{tile_id}.json"


def _worker_host() -> str | None:
    """Host address of the Dask worker running this task (None outside a worker)."""
    from urllib.parse import urlparse

    try:
        from distributed import get_worker

        return urlparse(get_worker().address).hostname
    except (ImportError, ValueError):
        return None


def _set_threads(threads: int | None, workers_per_host: dict[str, int] | None) -> None:
    """Torch threads of this process, once: so that the workers of a host share its cores."""
    if _THREADS:
        return
    import torch

    n = threads
    if n is None and workers_per_host:
        here = workers_per_host.get(_worker_host() or "", 0)
        if here:
            n = max(1, len(os.sched_getaffinity(0)) // here)
    if n:
        torch.set_num_threads(int(n))
        _THREADS.append(int(n))


def _bundle(path: str, device: str) -> Bundle:
    from pvdetect.device import resolve_device
    from pvdetect.model.bundle import load_bundle

    key = (path, device)
    if key not in _BUNDLES:
        _BUNDLES[key] = load_bundle(Path(path), device=resolve_device(device))
    return _BUNDLES[key]


def _valid_share(tile: Tile, mask_path: Path) -> float:
    """Share of the cell's pixels that are valid (mask not nodata)."""
    from pvdetect.data.raster import open_raster

    n, m = tile.cell_px, tile.margin
    with open_raster(mask_path) as ds:
        mask = ds.read(1, window=Window(m, m, n, n))
        nodata = ds.nodata
    return float((mask != nodata).mean()) if mask.size else 0.0


def tile_pieces(tile: Tile, plants_path: Path, prob_path: Path, min_area_m2: float) -> Pieces:
    """The tile's plants cut to the region it owns (see the module docstring)."""
    from pvdetect.inference.plants import AreaCalculator
    from pvdetect.inference.vectorize import polygon_prob_stats
    from pvdetect.mapping.rasters import float_view_xml

    plants = read_pieces(plants_path)
    owned = tile.owned
    shapely.prepare(owned)
    geoms = plants.geoms
    inside = shapely.within(geoms, owned) if len(geoms) else np.zeros(0, bool)
    keep_idx: list[int] = []
    out_geoms: list[Any] = []
    changed: list[bool] = []
    for i, g in enumerate(geoms):
        if inside[i]:
            keep_idx.append(i)
            out_geoms.append(g)
            changed.append(False)
            continue
        cut = shapely.intersection(g, owned)
        for part in shapely.get_parts(cut):
            if part.geom_type == "Polygon" and part.area > 0:
                keep_idx.append(i)
                out_geoms.append(part)
                changed.append(True)
    pieces = plants.take(np.array(keep_idx, dtype=np.int64), np.array(out_geoms, dtype=object))
    edge = shapely.intersects(pieces.geoms, owned.boundary) if len(pieces) else np.zeros(0, bool)
    redo = np.flatnonzero(changed)
    if redo.size:
        t = tile.transform
        inv = ~t
        px = shapely.transform(
            pieces.geoms[redo],
            lambda xy: np.column_stack(
                [
                    inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                    inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f,
                ]
            ),
        )
        areas = AreaCalculator(tile.crs, t, tile.size_px, tile.size_px).areas_m2(px)
        view = prob_path.with_name(prob_path.stem + "_float.vrt")
        write_text(view, float_view_xml(prob_path, view.parent))
        try:
            means, maxes = polygon_prob_stats(view, list(px))
        finally:
            view.unlink(missing_ok=True)
        pieces.set_stats(redo, areas, means, maxes)
    small = pieces.area_m2() < min_area_m2
    keep = edge | ~small
    pieces = pieces.take(np.flatnonzero(keep))
    pieces.edge = edge[keep]
    return pieces


def tile_attrs(pieces: Pieces, tile_id: str) -> Pieces:
    """The prediction's per-scene attributes as a map's: ``tile`` for ``scene``, no ``date``.

    A tile raster composites scenes of several dates (or a catalog's window), so the scene's
    name and date of :func:`~pvdetect.inference.predict.predict_scene` say nothing; the
    tile's id, the threshold and the model do.
    """
    names, columns = list(pieces.names), list(pieces.columns)
    if "date" in names:
        i = names.index("date")
        del names[i], columns[i]
    if "scene" in names:
        i = names.index("scene")
        names[i] = "tile"
        columns[i] = np.array([tile_id] * len(pieces), dtype=object)
    return Pieces(pieces.geoms, names, columns, pieces.edge)


def tile_check(bundle: Bundle, plan: ScenePlan, tile_id: str, strict: bool) -> InputCheck:
    """The input check of a tile raster, named by the tile and not logged.

    Every tile of a run would print the same warning; the driver reports the flagged tiles
    once (:func:`pvdetect.mapping.run.report_input_checks`). With ``strict`` a flagged tile
    fails (a DataError: the run stops).
    """
    from pvdetect.inference.input_check import check_scene

    names = list(bundle.meta.band_order)
    check = check_scene(plan, bundle.meta.band_stats, names, where=f"tile {tile_id}")
    if not check.ok and strict:
        raise DataError(f"{check.message} (--strict)")
    return check


def run_tile(job: TileJob) -> dict[str, Any]:
    """Predict one tile and record it; returns the tile's record (see the module docstring)."""
    from pvdetect.inference.predict import predict_scene
    from pvdetect.inference.tiling import plan_scene

    start = time.perf_counter()
    tile, out = job.tile, Path(job.out_dir)
    _set_threads(job.threads, job.workers_per_host)
    bundle = _bundle(job.bundle, job.options.device)
    tiles = out / "tiles"
    try:
        tiles.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{tile.id}.work-", dir=tiles))
    except OSError as exc:
        raise OutputError(f"{tiles}: cannot write here ({exc.strerror or exc})") from None
    try:
        raster = job.source.read(tile, work)
        stage = work / tile.id
        plan = plan_scene(bundle, raster, job.options)
        check = tile_check(bundle, plan, tile.id, job.options.strict)
        result = predict_scene(bundle, raster, stage, job.options, plan, check=check)
        raster.unlink(missing_ok=True)
        pieces = tile_attrs(
            tile_pieces(tile, result.plants_path, result.prob_path, job.min_area_m2), tile.id
        )
        names = tile_files(out, tile.id)
        result.plants_path.unlink()
        write_pieces(stage / names["plants"].name, pieces, tile.crs)
        share = _valid_share(tile, result.mask_path)
        final = tile_dir(out, tile.id)
        if final.exists():  # an earlier attempt's files: replaced in two renames
            final.rename(work / "previous")
        stage.rename(final)
        record = {
            "tile": tile.id,
            "epsg": tile.epsg,
            "plants": len(pieces),
            "hectares": float(pieces.area_m2().sum() / 10000.0),
            "valid_share": share,
            "megapixels": tile.cell_px**2 / 1e6,
            "seconds": time.perf_counter() - start,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "input_check": check.summary,
            "input_message": check.message,
            "files": {k: str(p.relative_to(out)) for k, p in names.items()},
        }
        write_json(record_path(out, tile.id), record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record

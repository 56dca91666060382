"""``pvdetect map``: PV plants over a region from many scenes, tile by tile on Dask."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvdetect.commands.predict import add_plant_arguments, check_plant_arguments
from pvdetect.errors import ConfigError, DataError
from pvdetect.io import first_line


def _area_arguments(area: argparse._ArgumentGroup) -> None:
    """Where to map and where its imagery comes from."""
    area.add_argument(
        "--scenes", nargs="+", type=Path, metavar="PATH", help="scene GeoTIFFs or folders"
    )
    area.add_argument("--bbox", metavar="W,S,E,N", help="area of interest in degrees (WGS 84)")
    area.add_argument("--aoi", type=Path, metavar="FILE", help="area of interest: polygons file")
    area.add_argument(
        "--catalog",
        metavar="NAME|URL",
        help="STAC catalog to fetch each tile's median composite from: bdc, earth-search, "
        "planetary-computer or an API address",
    )
    area.add_argument(
        "--collection", metavar="NAME", help="collection (--catalog; default: its Sentinel-2)"
    )
    area.add_argument("--start", metavar="DATE", help="first acquisition date (--catalog)")
    area.add_argument("--end", metavar="DATE", help="last acquisition date (--catalog)")
    area.add_argument(
        "--max-items",
        type=int,
        default=60,
        help="items composited per tile at most, the least cloudy (--catalog; default 60)",
    )
    area.add_argument(
        "--memory-mb",
        type=float,
        default=1024,
        help="memory budget of one tile's composite on a worker (--catalog; default 1024)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect map``."""
    parser.add_argument("bundle", type=Path, help="model bundle (folder or .pvb; torch or ONNX)")
    parser.add_argument("--out", type=Path, required=True, help="map folder")
    _area_arguments(parser.add_argument_group("area and imagery"))
    grid = parser.add_argument_group("grid and outputs")
    grid.add_argument(
        "--tile-km", type=float, default=20.0, help="side of a grid cell in km (default 20)"
    )
    grid.add_argument(
        "--resolution", type=float, default=10.0, metavar="M", help="pixel size (default 10 m)"
    )
    grid.add_argument(
        "--margin",
        type=int,
        default=None,
        metavar="PX",
        help="context pixels around each cell (default: the bundle's tile overlap)",
    )
    grid.add_argument(
        "--crs", default="EPSG:4326", help="CRS of plants.gpkg (default EPSG:4326, WGS 84)"
    )
    grid.add_argument(
        "--quicklook-size", type=int, default=2048, metavar="PX", help="quicklook.png long side"
    )
    pred = parser.add_argument_group("prediction")
    add_plant_arguments(pred)
    pred.add_argument("--device", default="auto", help="auto, cpu or cuda, on every worker")
    run = parser.add_argument_group("execution")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None, help="start a local cluster of N worker processes"
    )
    where.add_argument("--cluster", metavar="tcp://HOST:PORT", help="use a running Dask scheduler")
    run.add_argument(
        "--resources",
        metavar="NAME=N[,...]",
        help="Dask worker resources each tile needs, e.g. GPU=1",
    )
    run.add_argument("--retries", type=int, default=2, help="retries of a failing tile (default 2)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument(
        "--overwrite", action="store_true", help="replace the map run in --out (only its files)"
    )


def _catalog(args: argparse.Namespace, aoi: object, bands: list[str], channels: int, nodata: float):  # noqa: ANN202 - a CatalogScenes
    """The ``--catalog`` tile source, its options checked."""
    from pvdetect.acquire.catalogs import resolve_catalog
    from pvdetect.commands.acquire import parse_date
    from pvdetect.mapping.catalog import CatalogScenes

    if aoi is None:
        raise ConfigError("--catalog needs an area: give --bbox or --aoi")
    if not args.start or not args.end:
        raise ConfigError("--catalog needs a date window: give --start and --end")
    catalog, collection = resolve_catalog(args.catalog, args.collection)
    return CatalogScenes(
        catalog=catalog,
        collection=collection,
        start=parse_date(args.start, "--start"),
        end=parse_date(args.end, "--end"),
        band_order=tuple(bands),
        in_channels=channels,
        max_items=args.max_items,
        memory_mb=args.memory_mb,
        nodata=nodata,
    )


def _bbox(text: str):  # noqa: ANN202 - a shapely polygon
    from shapely.geometry import box

    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--bbox {text}: expected W,S,E,N in degrees") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ConfigError(f"--bbox {text}: expected W < E within -180..180, S < N within -90..90")
    return box(w, s, e, n)


def read_aoi(path: Path):  # noqa: ANN201 - a shapely geometry
    """The union of the polygons in a vector file, in EPSG:4326."""
    import numpy as np
    import pyogrio.raw
    import pyproj
    import shapely

    from pvdetect.mapping.grid import to_crs

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(str(path), read_geometry=True, columns=[])
    except Exception as exc:  # noqa: BLE001 - pyogrio raises its own and GDAL's types
        raise DataError(f"{path}: not a readable vector file ({first_line(exc)})") from None
    geoms = shapely.from_wkb(wkb) if wkb is not None and len(wkb) else np.array([])
    polys = [g for g in geoms if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise DataError(f"{path}: holds no polygons")
    area = shapely.make_valid(shapely.union_all(polys))
    crs = meta.get("crs")
    if crs:
        tr = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        area = to_crs(shapely.segmentize(area, _seg(area)), tr)
    return area


def _seg(area) -> float:  # noqa: ANN001
    b = area.bounds
    return max(b[2] - b[0], b[3] - b[1]) / 64 or 1.0


def _resources(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--resources {text}: expected NAME=NUMBER[,NAME=NUMBER]") from None
        if not name.strip():
            raise ConfigError(f"--resources {text}: expected NAME=NUMBER[,NAME=NUMBER]")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect map``."""
    from pvdetect.inference.options import PredictOptions
    from pvdetect.mapping.cluster import open_client
    from pvdetect.mapping.run import MapConfig, map_region
    from pvdetect.mapping.sources import LocalScenes, TileSource
    from pvdetect.model.bundle import read_meta

    check_plant_arguments(args)
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: give one of them")
    if args.bbox and args.aoi:
        raise ConfigError("--bbox and --aoi: give one of them")
    if args.scenes and args.catalog:
        raise ConfigError("--scenes and --catalog: give one of them")
    if not args.scenes and not args.catalog:
        raise ConfigError("no imagery: give --scenes (or --catalog with --bbox/--aoi)")
    if not args.catalog and (args.start or args.end or args.collection):
        raise ConfigError("--start, --end and --collection go with --catalog")
    aoi = _bbox(args.bbox) if args.bbox else read_aoi(args.aoi) if args.aoi else None
    meta = read_meta(args.bundle)
    source: TileSource
    if args.catalog:
        source = _catalog(args, aoi, meta.band_order, meta.in_channels, meta.nodata)
    else:
        source = LocalScenes.from_paths(args.scenes, meta.band_order, meta.in_channels, meta.nodata)
    cfg = MapConfig(
        bundle=args.bundle,
        out=args.out,
        tile_km=args.tile_km,
        resolution=args.resolution,
        margin=args.margin,
        crs=args.crs,
        aoi=aoi,
        options=PredictOptions(
            batch_size=args.batch_size,
            threshold=args.threshold,
            min_area_m2=args.min_area,
            max_hole_m2=args.max_hole,
            tta=args.tta,
            device=args.device,
        ),
        resume=args.resume,
        overwrite=args.overwrite,
        retries=args.retries,
        resources=_resources(args.resources),
        quicklook_size=args.quicklook_size,
    )
    with open_client(args.workers, args.cluster) as (client, info):
        result = map_region(cfg, source, client, info, stream=sys.stderr)
    print(
        f"wrote {result.out}: {result.plants} plants ({result.hectares:.2f} ha), "
        f"{result.tiles} tiles ({result.done_before} done before); plants.gpkg, prob.vrt, "
        "mask.vrt, quicklook.png, summary.csv"
    )
    return 0

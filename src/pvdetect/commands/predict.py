"""``pvdetect predict``: PV on whole scenes: rasters, polygons, overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect import logs
from pvdetect.errors import ConfigError
from pvdetect.inference.predict import PredictOptions, predict_scenes
from pvdetect.inference.tiling import CPU_BATCH, GPU_BATCH
from pvdetect.inference.vectorize import DEFAULT_MAX_HOLE_M2, DEFAULT_MIN_AREA_M2

#: the log file each run appends to in its output folder
LOG_NAME = "pvdetect.log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect predict``."""
    parser.add_argument("bundle", type=Path, help="model bundle (folder or .pvb)")
    parser.add_argument("scenes", nargs="+", type=Path, help="scene GeoTIFFs or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: bundle)")
    parser.add_argument(
        "--overlap", type=int, default=None, help="tile overlap in pixels (default: bundle)"
    )
    add_plant_arguments(parser)
    parser.add_argument(
        "--geojson", action="store_true", help="also write <stem>_plants.geojson (EPSG:4326)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--upscaled-output",
        action="store_true",
        help="with an upscaling bundle, write rasters at the upscaled resolution",
    )
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    add_input_arguments(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a scene whose values look unlike the training data (default: warn)",
    )
    parser.add_argument(
        "--aoi",
        type=Path,
        default=None,
        metavar="FILE",
        help="area of interest (GeoJSON, GeoPackage ... polygons, any CRS): predict only there",
    )


def add_plant_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--batch-size``, ``--threshold``, ``--min-area``, ``--max-hole``, ``--tta`` (shared
    with ``pvdetect map``)."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"tiles per forward pass (default {CPU_BATCH} on CPU, {GPU_BATCH} on GPU)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="PV probability threshold (default: bundle)"
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=DEFAULT_MIN_AREA_M2,
        metavar="M2",
        help=f"drop plants smaller than this many m2 (default {DEFAULT_MIN_AREA_M2:g})",
    )
    parser.add_argument(
        "--max-hole",
        type=float,
        default=DEFAULT_MAX_HOLE_M2,
        metavar="M2",
        help=f"fill holes in plants smaller than this many m2 (default {DEFAULT_MAX_HOLE_M2:g})",
    )
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (8x slower)")


def check_plant_arguments(args: argparse.Namespace) -> None:
    """Refuse a threshold outside [0, 1] and negative areas."""
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.min_area < 0 or args.max_hole < 0:
        raise ConfigError("--min-area and --max-hole must be >= 0")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bands``, ``--offset``, ``--scale`` (shared with ``pvdetect evaluate``)."""
    parser.add_argument(
        "--bands",
        default=None,
        metavar="LIST",
        help="file bands in the model's order (Red, Green, Blue, NIR): names or 1-based "
        "indices, e.g. B04,B03,B02,B08 or 3,2,1,7 (default: by band names, else file order)",
    )
    parser.add_argument(
        "--offset",
        default=None,
        metavar="V[,V..]",
        help="added to the stored values after --scale, one value or one per band (e.g. -1000 "
        "for Sentinel-2 L2A since baseline 04.00; default: the file's metadata)",
    )
    parser.add_argument(
        "--scale",
        default=None,
        metavar="S[,S..]",
        help="multiplies the stored values (<= 1e-3: result is reflectance 0..1, taken x 10000; "
        "10000 for files in reflectance 0..1; default: the file's metadata)",
    )


def check_input_arguments(args: argparse.Namespace) -> None:
    """Refuse malformed ``--bands`` / ``--offset`` / ``--scale`` before anything is read."""
    from pvdetect.data.bands import parse_band_spec
    from pvdetect.data.radiometry import RadiometryOptions

    if args.bands is not None:
        parse_band_spec(args.bands)
    RadiometryOptions.parse(args.offset, args.scale)


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect predict``."""
    check_plant_arguments(args)
    check_input_arguments(args)
    options = PredictOptions(
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
        min_area_m2=args.min_area,
        max_hole_m2=args.max_hole,
        tta=args.tta,
        geojson=args.geojson,
        device=args.device,
        upscaled_output=args.upscaled_output,
        overlay=not args.no_overlay,
        bands=args.bands,
        offset=args.offset,
        scale=args.scale,
        strict=args.strict,
        aoi=args.aoi,
    )
    results = predict_scenes(args.bundle, args.scenes, args.out, options, log_file=LOG_NAME)
    logs.echo(f"wrote {len(results)} scene(s) to {args.out} (summary.csv, {LOG_NAME})")
    return 0

"""``pvdetect predict``: PV on whole scenes: rasters, polygons, overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect.errors import ConfigError
from pvdetect.inference.predict import PredictOptions, predict_scenes
from pvdetect.inference.tiling import CPU_BATCH, GPU_BATCH
from pvdetect.inference.vectorize import DEFAULT_MAX_HOLE_M2, DEFAULT_MIN_AREA_M2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect predict``."""
    parser.add_argument("bundle", type=Path, help="model bundle (folder or .pvb)")
    parser.add_argument("scenes", nargs="+", type=Path, help="scene GeoTIFFs or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: bundle)")
    parser.add_argument(
        "--overlap", type=int, default=None, help="tile overlap in pixels (default: bundle)"
    )
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


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect predict``."""
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.min_area < 0 or args.max_hole < 0:
        raise ConfigError("--min-area and --max-hole must be >= 0")
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
    )
    results = predict_scenes(args.bundle, args.scenes, args.out, options)
    for r in results:
        print(
            f"{r.scene.name}: {r.width}x{r.height} px, {r.tiles} tiles, {r.plants} plants, "
            f"{r.total_ha:.2f} ha, {r.seconds:.1f} s"
        )
    print(f"wrote {len(results)} scene(s) to {args.out} (summary.csv)")
    return 0

"""``pvdetect automask``: first PV masks of chips (NIR, NDVI and red bounds), for hand editing."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect.acquire.automask import AutomaskParams

_DEFAULTS = AutomaskParams()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect automask``."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="chip GeoTIFFs or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/masks/NAME.tif")
    parser.add_argument(
        "--nir-max",
        type=float,
        default=_DEFAULTS.nir_max,
        help=f"PV where NIR x 10000 is at most this (default {_DEFAULTS.nir_max:g})",
    )
    parser.add_argument(
        "--ndvi-max",
        type=float,
        default=_DEFAULTS.ndvi_max,
        help=f"... and NDVI at most this (default {_DEFAULTS.ndvi_max:g})",
    )
    parser.add_argument(
        "--red-min",
        type=float,
        default=_DEFAULTS.red_min,
        help=f"... and red x 10000 at least this (default {_DEFAULTS.red_min:g}; 0: off)",
    )
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=_DEFAULTS.min_pixels,
        help=f"drop PV regions smaller than this (default {_DEFAULTS.min_pixels}; 0: off)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing masks (hand edits are lost)"
    )


def run(args: argparse.Namespace) -> int:
    """Write one mask per image; existing masks are kept unless --overwrite."""
    from pvdetect.acquire.automask import automask_file, expand_images

    params = AutomaskParams(
        nir_max=args.nir_max,
        ndvi_max=args.ndvi_max,
        red_min=args.red_min,
        min_pixels=args.min_pixels,
    )
    images = expand_images(args.images)
    out = Path(args.out)
    written = kept = 0
    for image in images:
        res = automask_file(image, out, params, overwrite=args.overwrite)
        if res.written:
            written += 1
            share = res.pv_pixels / res.valid_pixels if res.valid_pixels else 0.0
            print(f"{res.mask}: {res.pv_pixels} PV pixel(s), {share:.1%} of valid pixels")
        else:
            kept += 1
            print(f"{res.mask}: exists, kept (--overwrite replaces it)")
    print(f"masks: {written} written, {kept} kept, in {out / 'masks'}")
    return 0

"""``pvdetect acquire``: a Sentinel-2 median composite (and chips) from a STAC catalog."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from pathlib import Path

from pvdetect.errors import ConfigError

DEFAULT_MASK = "0,1,3,8,9,10,11"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect acquire``."""
    # values such as --bbox -48.1,-15.9,-47.8,-15.7 start with '-': let argparse take them
    # as values (no option of this command looks like a negative number)
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\d[\d.,eE+\-]*$")
    parser.add_argument(
        "--catalog",
        required=True,
        metavar="bdc|earth-search|planetary-computer|URL",
        help="STAC catalog: a known name or the address of a STAC API",
    )
    parser.add_argument(
        "--collection", metavar="NAME", help="collection (default: the catalog's Sentinel-2)"
    )
    area = parser.add_mutually_exclusive_group(required=True)
    area.add_argument("--bbox", metavar="W,S,E,N", help="area in WGS 84 degrees")
    area.add_argument("--point", metavar="LON,LAT", help="centre of a square area (WGS 84)")
    parser.add_argument("--size-km", type=float, metavar="K", help="side of the --point square")
    parser.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first date")
    parser.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last date")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--crs", metavar="EPSG:NNNN", help="output CRS (default: UTM zone of the centre)"
    )
    parser.add_argument(
        "--resolution", type=float, default=10.0, metavar="M", help="pixel size in metres (10)"
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=60,
        metavar="N",
        help="items used at most, the least cloudy first (60)",
    )
    parser.add_argument(
        "--mask-classes",
        default=DEFAULT_MASK,
        metavar="C,C,...",
        help=f"SCL classes masked as invalid, or 'none' (default {DEFAULT_MASK})",
    )
    parser.add_argument("--chips", type=int, default=0, metavar="N", help="chips around --point")
    parser.add_argument(
        "--chip-size", type=int, default=256, metavar="PX", help="chip side in pixels (256)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the chip windows (0)"
    )
    parser.add_argument("--name", help="output name (default: from the area)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs of another request under --name, or redo this one",
    )
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=1024,
        metavar="MB",
        help="memory budget of the composite (1024)",
    )


def parse_date(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` option value; a one-line error naming ``option`` otherwise."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option}: expected a date YYYY-MM-DD, got {text!r}") from None


def parse_mask_classes(text: str) -> tuple[int, ...]:
    """``"0,1,3"`` -> ``(0, 1, 3)``; ``"none"`` or empty -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        values = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ConfigError(f"--mask-classes: expected integers like 0,1,3, got {text!r}") from None
    if any(not 0 <= v <= 255 for v in values):
        raise ConfigError(f"--mask-classes: classes lie in [0, 255], got {text!r}")
    return tuple(values)


def default_name(lon: float, lat: float) -> str:
    """A name from a position without '_' or '-' (which would split the chips' site)."""
    return f"{'W' if lon < 0 else 'E'}{abs(lon):.4f}{'S' if lat < 0 else 'N'}{abs(lat):.4f}"


def run(args: argparse.Namespace) -> int:
    """Run one acquisition and print where its outputs are."""
    from pvdetect.acquire.catalogs import resolve_catalog
    from pvdetect.acquire.grid import parse_bbox, parse_crs, parse_point
    from pvdetect.acquire.pipeline import acquire
    from pvdetect.acquire.request import AcquireRequest

    catalog, collection = resolve_catalog(args.catalog, args.collection)
    bbox = parse_bbox(args.bbox) if args.bbox else None
    point = parse_point(args.point) if args.point else None
    if bbox is not None and args.size_km is not None:
        raise ConfigError("--size-km: only with --point")
    if args.chips < 0:
        raise ConfigError(f"--chips: must be 0 or more, got {args.chips}")
    centre = point or ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)  # type: ignore[index]
    request = AcquireRequest(
        catalog=catalog,
        collection=collection,
        bbox=bbox,
        point=point,
        size_km=args.size_km,
        start=parse_date(args.start, "--start"),
        end=parse_date(args.end, "--end"),
        name=args.name or default_name(*centre),
        crs=parse_crs(args.crs) if args.crs else None,
        resolution=args.resolution,
        max_items=args.max_items,
        mask_classes=parse_mask_classes(args.mask_classes),
        chips=args.chips,
        chip_size=args.chip_size,
        seed=args.seed,
    )
    if not args.memory_mb > 0:
        raise ConfigError(f"--memory-mb: must be positive, got {args.memory_mb:g}")
    out = Path(args.out)
    result = acquire(request, out, overwrite=args.overwrite, memory_mb=args.memory_mb, log=print)
    for line in result.warnings:
        print(f"pvdetect acquire: warning: {line}", file=sys.stderr)
    if result.reused:
        print(f"reused {result.image}: complete output of the same request (--overwrite redoes it)")
    else:
        print(
            f"wrote {result.image} ({result.items} item(s), {result.dates} date(s), "
            f"{result.valid_fraction:.1%} of pixels valid) and {result.sidecar}"
        )
    if result.chips:
        print(f"chips: {len(result.chips)} in {result.chips[0].parent}")
    return 0

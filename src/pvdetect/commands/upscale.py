"""``pvdetect upscale``: write an upscaled copy of a chip dataset."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pvdetect import logs
from pvdetect.inference.upscale import FACTORS, STATS_CHOICES, upscale_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect upscale``."""
    parser.add_argument("data", type=Path, metavar="DATA", help="chip dataset folder (or CSV)")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder for the copy")
    parser.add_argument(
        "--factor", type=int, choices=FACTORS, default=2, help="upscale factor (default 2)"
    )
    parser.add_argument(
        "--method",
        choices=("bicubic", "sr"),
        default="bicubic",
        help="bicubic interpolation or a super-resolution network (default bicubic)",
    )
    parser.add_argument(
        "--sr-weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="ESRGAN/Real-ESRGAN weights (.pth or .safetensors) for --method sr",
    )
    parser.add_argument(
        "--stats-from",
        choices=STATS_CHOICES,
        default="train",
        help="split whose reflectance range scales the SR input (default train; none = /10000)",
    )
    parser.add_argument(
        "--nir",
        choices=("sr", "bicubic"),
        default="sr",
        help="NIR with --method sr: through the network as a grey image, or bicubic",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect upscale``."""
    n = upscale_dataset(
        args.data,
        args.out,
        args.factor,
        method=args.method,
        sr_weights=args.sr_weights,
        stats_from=args.stats_from,
        nir=args.nir,
        device=args.device,
        overwrite=args.overwrite,
    )
    with contextlib.suppress(BrokenPipeError):
        logs.echo(f"wrote {n} chips upscaled x{args.factor} ({args.method}) to {args.out}")
    return 0

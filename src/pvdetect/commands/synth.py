"""``pvdetect synth``: write a synthetic Sentinel-2-like PV dataset.

The dataset is written beside OUT and renamed to OUT when complete; OUT is replaced only if
it is empty or pvdetect synth wrote it (see :mod:`pvdetect.staging`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect import logs
from pvdetect.synth.dataset import generate_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect synth``."""
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--chips", type=int, default=300, help="labelled chips (default 300)")
    parser.add_argument("--scenes", type=int, default=2, help="large scenes (default 2)")
    parser.add_argument(
        "--scene-size", type=int, default=1024, help="scene width and height in px (default 1024)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--chip-size", type=int, default=256, help="chip width and height in px (default 256)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset that pvdetect synth wrote earlier in OUT (never anything else)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect synth``."""
    summary = generate_dataset(
        args.out,
        chips=args.chips,
        scenes=args.scenes,
        scene_size=args.scene_size,
        seed=args.seed,
        chip_size=args.chip_size,
        overwrite=args.overwrite,
        verbose=not args.quiet,
    )
    logs.echo(summary.format())
    return 0

"""The ``pvdetect`` command line: parses, calls one function, turns known errors into messages.

Each subcommand lives beside its feature: the module named in :data:`COMMANDS` defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``pvdetect check`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pvdetect import __version__
from pvdetect.errors import PVDetectError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("pvdetect.commands.synth", "write a synthetic Sentinel-2-like PV dataset"),
    "check": ("pvdetect.commands.check", "validate a chip dataset and print its summary"),
    "train": ("pvdetect.commands.train", "train a segmentation model and write a run folder"),
    "evaluate": ("pvdetect.commands.evaluate", "evaluate a model bundle on a split, with a report"),
    "baselines": ("pvdetect.commands.baselines", "fit and evaluate the simple baselines"),
    "predict": (
        "pvdetect.commands.predict",
        "predict PV on whole scenes: rasters, polygons, overlays",
    ),
    "upscale": ("pvdetect.commands.upscale", "write an upscaled copy of a chip dataset"),
    "map": (
        "pvdetect.commands.map",
        "map PV plants over a region on Dask: tiles, mosaics, one plant layer",
    ),
    "export": ("pvdetect.commands.export", "export a bundle's network to ONNX (onnxruntime)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only`` just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="pvdetect", description="Find PV solar plants in Sentinel-2 imagery."
    )
    parser.add_argument("--version", action="version", version=f"pvdetect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input or usage, 1 other errors)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    only = next((a for a in args_list if a in COMMANDS), None)
    parser = build_parser(only)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except PVDetectError as exc:
        print(f"pvdetect {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pvdetect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

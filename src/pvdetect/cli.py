"""The ``pvdetect`` command line: parses, calls one function, turns known errors into messages.

Each subcommand lives beside its feature: the module named in :data:`COMMANDS` defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``pvdetect check`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from pvdetect import __version__, logs
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
    "acquire": ("pvdetect.commands.acquire", "fetch a Sentinel-2 median composite from STAC"),
    "automask": ("pvdetect.commands.automask", "write first PV masks of chips, for hand editing"),
    "download": ("pvdetect.commands.download", "download and verify a public PV dataset"),
    "serve": ("pvdetect.commands.serve", "web page and API: pick an area on a map, get its plants"),
    "map": (
        "pvdetect.commands.map",
        "map PV plants over a region on Dask: tiles, mosaics, one plant layer",
    ),
    "export": ("pvdetect.commands.export", "export a bundle's network to ONNX (onnxruntime)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only`` just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="pvdetect",
        description="Find PV solar plants in Sentinel-2 imagery.",
        allow_abbrev=False,  # an abbreviation (--device for --devices) must not pass silently
    )
    parser.add_argument("--version", action="version", version=f"pvdetect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _output_options()
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common], allow_abbrev=False
        )
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def _output_options() -> argparse.ArgumentParser:
    """``-v`` / ``-q``, shared by every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    loud = out.add_mutually_exclusive_group()
    loud.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (debug messages)"
    )
    loud.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return common


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
    logs.setup(args.verbose, args.quiet, args.command, args_list)
    try:
        with _quiet_stdout(args.quiet):
            return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except PVDetectError as exc:
        _fail(f"pvdetect {args.command}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _fail(f"pvdetect {args.command}: interrupted")
        return 130
    finally:
        logs.teardown()


@contextlib.contextmanager
def _quiet_stdout(quiet: bool) -> Iterator[None]:
    """With ``-q`` nothing reaches stdout (errors go to stderr)."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def _fail(message: str) -> None:
    """The one-line error on stderr, and in the run's log file when there is one."""
    print(message, file=sys.stderr)
    logging.getLogger(logs.LOGGER).error(message, extra=logs.FILE_ONLY)


if __name__ == "__main__":
    sys.exit(main())

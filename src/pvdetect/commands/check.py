"""``pvdetect check``: validate a chip dataset and print its summary (exit 2 on problems)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvdetect import logs
from pvdetect.data.validate import CheckReport, check_dataset
from pvdetect.errors import OutputError
from pvdetect.io import atomic_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect check``."""
    parser.add_argument("data", metavar="DATA", help="dataset folder or CSV manifest")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the site split where none is given"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.15, help="val share of a computed split"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.15, help="test share of a computed split"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the check; prints the summary on stdout, problems on stderr; 2 if any problem."""
    report = check_dataset(
        args.data,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    logs.echo(report.format(problems=False))
    if args.json:
        _write_json(Path(args.json), report)
    if report.ok:
        return 0
    for line in report.problems:
        print(line, file=sys.stderr)
    return 2


def _write_json(path: Path, report: CheckReport) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for --json")
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None

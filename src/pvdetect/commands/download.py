"""``pvdetect download``: a public PV dataset, resumed when broken, verified, extracted safely."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvdetect.acquire.datasets import DATASETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pvdetect download``."""
    parser.add_argument("dataset", metavar="DATASET", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("out", metavar="DIR", help="folder to extract the dataset into")
    parser.add_argument("--url", help="download from this address instead (a mirror)")
    parser.add_argument(
        "--sha256", metavar="HEX", help="expected SHA-256 of the archive (checked before use)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="extract even without a checksum to compare with (not recommended)",
    )


def run(args: argparse.Namespace) -> int:
    """Download, verify and extract; prints where the dataset is."""
    from pvdetect.acquire.datasets import get_dataset
    from pvdetect.acquire.download import download_dataset, normalise_sha256
    from pvdetect.errors import ConfigError

    source = get_dataset(args.dataset)
    sha = normalise_sha256(args.sha256)
    if args.no_verify and sha:
        raise ConfigError("--no-verify: contradicts --sha256 (give one of them)")
    shown = {"done": -1}

    def progress(have: int, total: int | None) -> None:
        step = have >> 24  # a line every 16 MiB
        if step != shown["done"] and sys.stdout.isatty():
            shown["done"] = step
            of = f" of {total / 2**20:.0f}" if total else ""
            print(f"\r{have / 2**20:.0f}{of} MiB", end="", flush=True)

    result = download_dataset(
        source,
        Path(args.out),
        url=args.url,
        sha256=sha,
        verify=not args.no_verify,
        progress=progress,
    )
    if sys.stdout.isatty() and shown["done"] >= 0:
        print()
    if result.reused:
        print(f"{result.out_dir}: {source.name} is there already ({result.files} files)")
        return 0
    check = "verified" if result.verified else "NOT verified"
    print(f"sha256 {result.sha256} ({check})")
    names = ", ".join(f.name for f in result.folders)
    print(f"extracted {result.files} files into {result.out_dir} ({names})")
    return 0

"""``pvdetect baselines``: fit the simple baselines on the training split and evaluate them."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect import logs
from pvdetect.commands.evaluate import add_mirror_argument
from pvdetect.evaluation.baseline_runs import run_baselines
from pvdetect.evaluation.baselines import DEFAULT_SAMPLE
from pvdetect.evaluation.report import summary_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect baselines``."""
    parser.add_argument("data", type=Path, help="dataset folder or CSV manifest")
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split to evaluate on (default: test)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for metrics.json and report.html"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=40, help="chips per batch (default 40)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument(
        "--sample-size",
        type=int,
        default=DEFAULT_SAMPLE,
        help=f"training pixels for the logistic fit (default {DEFAULT_SAMPLE})",
    )
    parser.add_argument(
        "--balanced", action="store_true", help="class-balanced weights for the logistic regression"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="packed-cache folder (default: DATA/.pvdetect_cache)",
    )
    add_mirror_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect baselines``."""
    res = run_baselines(
        args.data,
        args.split,
        args.out,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        sample_size=args.sample_size,
        class_weight="balanced" if args.balanced else None,
        cache_dir=args.cache_dir,
        mirror_windows=args.mirror_windows,
    )
    logs.attach_file(Path(args.out) / "pvdetect.log")
    for name, m in res["baselines"].items():
        logs.echo(summary_line(name, m["pixel"], m["threshold"], m["object"]))
    logs.echo(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0

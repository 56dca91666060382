"""``pvdetect evaluate``: evaluate a model bundle on a split, with metrics.json and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvdetect import logs
from pvdetect.commands.predict import LOG_NAME, add_input_arguments, check_input_arguments
from pvdetect.errors import ConfigError
from pvdetect.evaluation.evaluate import EvaluateOptions, evaluate_bundle
from pvdetect.evaluation.report import summary_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect evaluate``."""
    parser.add_argument("bundle", type=Path, help="model bundle folder or .pvb file")
    parser.add_argument(
        "data", type=Path, nargs="?", help="dataset folder or CSV manifest (or use --data)"
    )
    parser.add_argument(
        "--data",
        dest="more_data",
        type=Path,
        action="append",
        default=[],
        metavar="ROOT",
        help="a further dataset, repeatable: all are evaluated together, with a per-dataset "
        "table in the report",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split to evaluate (default: test)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for metrics.json and report.html"
    )
    parser.add_argument("--batch-size", type=int, default=40, help="chips per batch (default 40)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--tta", action="store_true", help="average the 8 flips/rotations")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold (default: the bundle's, chosen on validation)",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also fit the baselines on the training split and compare",
    )
    parser.add_argument(
        "--baselines-json",
        type=Path,
        default=None,
        help="metrics.json of 'pvdetect baselines' to compare with (default: "
        "OUT/../baselines/metrics.json when present)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the baselines (default 0)")
    res = parser.add_mutually_exclusive_group()
    res.add_argument(
        "--native",
        dest="native",
        action="store_true",
        default=True,
        help="evaluate at the chips' resolution (default)",
    )
    res.add_argument(
        "--upscaled",
        dest="native",
        action="store_false",
        help="evaluate an upscaling bundle at its upscaled resolution",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="packed-cache folder (default: DATA/.pvdetect_cache)",
    )
    parser.add_argument(
        "--exclude",
        default=None,
        metavar="FILE",
        help="chips to leave out, one per line (# comments): image or mask path relative to "
        "the dataset folder, chip key, or a shell pattern of them (as train --exclude)",
    )
    add_mirror_argument(parser)
    add_input_arguments(parser)


def add_mirror_argument(parser: argparse.ArgumentParser) -> None:
    """``--mirror-windows`` of ``evaluate`` and ``baselines``."""
    parser.add_argument(
        "--mirror-windows",
        action="store_true",
        help="score each chip with its window mirrored over the chip, image and label alike "
        "(chip sets cut to their labels, as train --mirror-windows validates on them): every "
        "labelled pixel counts and the window's shape no longer tells where the plant is",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect evaluate``."""
    check_input_arguments(args)
    roots = ([args.data] if args.data is not None else []) + list(args.more_data)
    if not roots:
        raise ConfigError("no dataset given: pass DATA or --data ROOT")
    m = evaluate_bundle(
        args.bundle,
        roots[0] if len(roots) == 1 else roots,
        args.split,
        args.out,
        EvaluateOptions(
            batch_size=args.batch_size,
            device=args.device,
            tta=args.tta,
            threshold=args.threshold,
            native=args.native,
            baselines=args.baselines,
            baselines_json=args.baselines_json,
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
            bands=args.bands,
            offset=args.offset,
            scale=args.scale,
            exclude=args.exclude,
            mirror_windows=args.mirror_windows,
        ),
    )
    logs.attach_file(Path(args.out) / LOG_NAME)
    px, th, ob = m["pixel"], m["threshold"], m["object"]
    logs.echo(summary_line(f"{args.split}", px, th, ob))
    for name, v in (m.get("per_source") or {}).items():
        logs.echo(f"  {name}: IoU {v['iou']:.4f}  F1 {v['f1']:.4f}  ({v['n_images']} chips)")
    logs.echo(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0

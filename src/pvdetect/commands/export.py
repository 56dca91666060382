"""``pvdetect export``: a bundle's network as ONNX, in a bundle that onnxruntime runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect export``."""
    parser.add_argument("bundle", type=Path, help="model bundle (folder or .pvb)")
    parser.add_argument(
        "--onnx",
        type=Path,
        required=True,
        metavar="OUT",
        help="output bundle folder: model.onnx + bundle.json (runtime onnx)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: pvdetect's, 17)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pvdetect export``."""
    from pvdetect.model.onnx import OPSET, export_onnx

    out = export_onnx(args.bundle, args.onnx, opset=args.opset or OPSET)
    print(f"wrote ONNX bundle {out} (model.onnx, bundle.json)")
    return 0

"""``RUN/metrics.csv``: its columns, and reading and rewriting it atomically.

Runs over several sources add per-source columns after the standard ones, named
``METRIC@SOURCE`` (``val_loss@austria``, ``val_iou@austria``, ``val_f1@austria``, ...).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvdetect.io import atomic_output

__all__ = ["METRIC_COLUMNS", "num", "read_rows", "write_rows"]

#: columns of RUN/metrics.csv; ``val_iou_calibrated`` is the validation IoU (native
#: resolution) at that epoch's calibrated threshold ``val_threshold`` (what the bundle uses),
#: the other IoU and F1 columns are at 0.5
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "train_iou",
    "val_iou",
    "val_f1",
    "lr",
    "val_iou_native",
    "val_f1_native",
    "val_iou_calibrated",
    "val_threshold",
)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` (none when the file does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(
    path: Path, rows: list[dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS
) -> None:
    """Rewrite ``metrics.csv`` atomically with the standard (or the given) columns."""
    with atomic_output(path) as tmp, Path(tmp).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def num(value: Any) -> float:
    """A CSV cell as a float (NaN when empty or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

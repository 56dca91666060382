"""``summary.csv`` of an output folder: one row per scene ever predicted into it.

The file is rewritten (atomically) after every scene with the rows it held before and the new
ones, keyed by the scene's file name: a scene predicted again replaces its row in place, rows
of scenes predicted by earlier runs into the same folder stay, and an interrupted run leaves
the rows of the scenes it finished. Columns of an older file that this version does not write
are kept.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pvdetect.errors import OutputError
from pvdetect.io import atomic_output

__all__ = [
    "SUMMARY_FIELDS",
    "SceneResult",
    "read_summary",
    "scene_line",
    "summary_row",
    "update_summary",
]

SUMMARY_FIELDS = (
    "scene",
    "plants",
    "total_ha",
    "seconds",
    "width",
    "height",
    "date",
    "input_check",
    "threshold",
    "model",
)


@dataclass
class SceneResult:
    """What :func:`~pvdetect.inference.predict.predict_scene` wrote for one scene."""

    scene: Path
    width: int
    height: int
    plants: int
    total_ha: float
    seconds: float
    tiles: int
    prob_path: Path
    mask_path: Path
    plants_path: Path
    geojson_path: Path | None = None
    overlay_path: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    date: str = ""  # acquisition date, YYYY-MM-DD, when known
    input_check: str = ""  # InputCheck.summary
    threshold: float | None = None
    model: str = ""


def summary_row(r: SceneResult) -> dict[str, str]:
    """The ``summary.csv`` row of one scene."""
    return {
        "scene": r.scene.name,
        "plants": str(r.plants),
        "total_ha": f"{r.total_ha:.4f}",
        "seconds": f"{r.seconds:.2f}",
        "width": str(r.width),
        "height": str(r.height),
        "date": r.date,
        "input_check": r.input_check,
        "threshold": f"{r.threshold:g}" if r.threshold is not None else "",
        "model": r.model,
    }


def read_summary(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of an existing ``summary.csv`` (none when missing).

    Raises:
        OutputError: the file exists but is not a readable CSV (it is never overwritten then).
    """
    if not path.is_file():
        return [], []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [dict(r) for r in reader]
            fields = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutputError(
            f"{path}: cannot read the existing summary ({exc}); move it away"
        ) from None
    if "scene" not in fields:
        raise OutputError(f"{path}: not a pvdetect summary (no 'scene' column); move it away")
    return fields, rows


def update_summary(path: Path, results: Sequence[SceneResult]) -> Path:
    """Merge ``results`` into ``summary.csv`` (replacing rows of the same scenes), atomically."""
    old_fields, rows = read_summary(path)
    by_scene = {r.get("scene", ""): i for i, r in enumerate(rows)}
    for res in results:
        row = summary_row(res)
        if row["scene"] in by_scene:
            rows[by_scene[row["scene"]]] = row
        else:
            by_scene[row["scene"]] = len(rows)
            rows.append(row)
    fields = list(SUMMARY_FIELDS) + [f for f in old_fields if f not in SUMMARY_FIELDS]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def scene_line(r: SceneResult, k: int = 1, n: int = 1) -> str:
    """The progress line of a finished scene (``[k/n]`` when a run has several)."""
    line = (
        f"{r.scene.name}: {r.width}x{r.height} px, {r.tiles} tiles, {r.plants} plants, "
        f"{r.total_ha:.2f} ha, {r.seconds:.1f} s"
    )
    return f"{line} [{k}/{n}]" if n > 1 else line

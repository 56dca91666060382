"""The model beside the baselines: comparison entries and finding a baselines metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pvdetect.errors import ConfigError, DataError

__all__ = ["comparison_entry", "find_baselines"]

log = logging.getLogger(__name__)


def comparison_entry(metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary of one metrics dict kept in a comparison table."""
    th = metrics.get("threshold", {})
    return {
        "pixel": metrics.get("pixel", {}),
        "object": metrics.get("object", {}),
        "threshold": {k: th.get(k) for k in ("used", "source", "best", "at_best")},
    }


def _read_entries(path: Path, explicit: bool) -> dict[str, dict[str, Any]] | None:
    """The ``baselines`` entries of a ``pvdetect baselines`` metrics.json (None: not one)."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError):
        data = None
    entries = data.get("baselines") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        if explicit:
            raise DataError(f"{path}: not a metrics.json written by 'pvdetect baselines'")
        log.warning("%s: not a metrics.json of 'pvdetect baselines'; ignored", path)
        return None
    return entries


def find_baselines(
    out: Path | None, explicit: Path | None, split: str, fingerprint: str, mirrored: bool = False
) -> tuple[dict[str, dict[str, Any]], str]:
    """Baseline metrics from an explicit file or ``OUT/../baselines/metrics.json``; the note
    warns when they were computed on other data or with the windows scored otherwise than
    ``mirrored`` (``--mirror-windows``).

    Returns:
        The entries by baseline name (empty when none fit) and a note for the report.

    Raises:
        ConfigError: the explicit file is missing or was evaluated on another split.
        DataError: the explicit file is not a baselines metrics.json.
    """
    if explicit is not None and not explicit.is_file():
        raise ConfigError(f"{explicit}: baselines metrics file not found")
    path = explicit or (out.parent / "baselines" / "metrics.json" if out else None)
    if path is None or not path.is_file():
        return {}, ""
    entries = _read_entries(path, explicit is not None)
    if entries is None:
        return {}, ""
    splits = {e.get("data", {}).get("split") for e in entries.values()}
    if splits != {split}:
        if explicit is not None:
            raise ConfigError(
                f"{path}: baselines were evaluated on split(s) "
                f"{', '.join(sorted(map(str, splits)))}, not {split}"
            )
        log.warning("%s: baselines were evaluated on %s, not %s; ignored", path, splits, split)
        return {}, ""
    fps = {e.get("data", {}).get("fingerprint") for e in entries.values()}
    note = f"baselines from {path}"
    if fingerprint and fps != {fingerprint}:
        note += " (WARNING: computed on different data)"
    theirs = {bool(e.get("data", {}).get("windows_mirrored")) for e in entries.values()}
    if entries and theirs != {mirrored}:
        note += (
            " (WARNING: the baselines were scored on the windows as cut, the model on them "
            "mirrored)"
            if mirrored
            else " (WARNING: the baselines were scored with the windows mirrored, the model not)"
        )
    return entries, note

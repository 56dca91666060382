"""What a dataset is made of: chip records, the result of a layout scan, the split names."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SPLITS", "ChipRecord", "LayoutScan", "dir_writable", "natural_key"]

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ChipRecord:
    """One image/mask pair.

    Attributes:
        image: Path of the 4-band image GeoTIFF.
        mask: Path of the 1-band mask GeoTIFF.
        split: ``"train"``, ``"val"`` or ``"test"``.
        site: Plant/site id; chips of one site never cross splits.
        key: Unique id of the chip, e.g. ``"train/12"`` or the file stem.
    """

    image: Path
    mask: Path
    split: str
    site: str
    key: str


@dataclass
class LayoutScan:
    """Everything found while scanning a dataset folder.

    Attributes:
        root: The dataset folder (for a manifest: the CSV's folder).
        layout: ``"brazil"``, ``"folders"`` or ``"manifest"``.
        records: Complete image/mask pairs with their split and site.
        problems: ``"path: problem"`` lines for contract violations found by the scan.
        warnings: Non-fatal remarks (ignored files, carved splits, ...).
        declared_splits: Splits that the layout itself declares (folders or manifest column).
        split_source: ``"layout"`` (declared), ``"saved"`` (reused split file) or ``"site"``
            (computed site-grouped split).
        split_file: The split file that was written or reused, if any.
    """

    root: Path
    layout: str
    records: list[ChipRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    declared_splits: tuple[str, ...] = ()
    split_source: str = "layout"
    split_file: Path | None = None


def dir_writable(path: Path) -> bool:
    """True when ``path`` is a folder we may write to.

    A folder without any write permission bit counts as read-only even for root, so shared
    read-only data is never written into.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or not (st.st_mode & 0o222):
        return False
    return os.access(path, os.W_OK | os.X_OK)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``img2`` before ``img10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))

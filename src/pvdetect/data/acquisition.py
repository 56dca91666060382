"""When a scene was acquired: from its metadata or its file name.

Looked up in this order (the first valid date wins):

1. acquisition metadata of the file (dataset tags, including a ``.aux.xml``):
   ``ACQUISITION_DATE``, ``DATATAKE_1_DATATAKE_SENSING_START`` (Sentinel-2 products through
   GDAL), ``SENSING_TIME``, ``PRODUCT_START_TIME``, ``DATE_ACQUIRED``, ``ACQUISITION_TIME``,
   ``DATETIME``;
2. a date in the file name: ``YYYYMMDD`` (as in ``S2A_MSIL2A_20220105T101321_...`` or
   ``T33UXP_20220105T101321_B04``) or ``YYYY-MM-DD``;
3. ``TIFFTAG_DATETIME`` (often the time the file was written, hence last).

Dates outside 1972..2100 are ignored. The result is ``YYYY-MM-DD``, or empty when unknown.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ACQUISITION_KEYS", "acquisition_date"]

ACQUISITION_KEYS = (
    "ACQUISITION_DATE",
    "DATATAKE_1_DATATAKE_SENSING_START",
    "SENSING_TIME",
    "PRODUCT_START_TIME",
    "DATE_ACQUIRED",
    "ACQUISITION_TIME",
    "DATETIME",
)
_DATE = re.compile(r"(?<!\d)(\d{4})[-:_/]?(\d{2})[-:_/]?(\d{2})(?!\d)")
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?=T\d{6}|[^0-9]|$)|(\d{4})-(\d{2})-(\d{2})")


def _valid(y: str, m: str, d: str) -> str | None:
    try:
        date = _dt.date(int(y), int(m), int(d))
    except ValueError:
        return None
    return date.isoformat() if 1972 <= date.year <= 2100 else None


def _from_text(text: str) -> str | None:
    m = _DATE.search(text.strip())
    return _valid(*m.groups()) if m else None


def _from_name(name: str) -> str | None:
    for m in _NAME_DATE.finditer(name):
        groups = m.groups()
        found = _valid(*groups[:3]) if groups[0] else _valid(*groups[3:])
        if found:
            return found
    return None


def acquisition_date(tags: Mapping[str, str], path: str | Path | None = None) -> str:
    """The acquisition date (``YYYY-MM-DD``) of a scene, or ``""`` when nothing tells."""
    upper = {k.upper(): str(v) for k, v in tags.items()}
    for key in ACQUISITION_KEYS:
        if key in upper and (found := _from_text(upper[key])):
            return found
    if path is not None and (found := _from_name(Path(path).name)):
        return found
    if "TIFFTAG_DATETIME" in upper and (found := _from_text(upper["TIFFTAG_DATETIME"])):
        return found
    return ""

"""The JSON sidecar of an acquisition: what was asked, found, applied and written.

:func:`build_sidecar` makes the document; :func:`read_sidecar` reads one back (None unless it
is a sidecar of this format) and :func:`chip_files` lists its chips, only those named as an
acquisition names its chips, so that a hand-edited sidecar can never make pvdetect reuse or
remove other files.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pvdetect import __version__
from pvdetect.acquire.assets import ItemAssets
from pvdetect.acquire.catalogs import SearchResult
from pvdetect.acquire.composite import CompositeResult, group_by_day
from pvdetect.acquire.grid import Grid
from pvdetect.acquire.readers import OUT_NODATA
from pvdetect.acquire.request import AcquireRequest
from pvdetect.data.raster import BAND_NAMES

FORMAT = "pvdetect-acquire/1"


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path``, or None when missing, unreadable or of another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def chip_files(doc: dict[str, Any] | None, out_dir: Path, name: str) -> list[Path]:
    """The chips a sidecar lists, only those named as this acquisition names its chips."""
    pattern = re.compile(rf"^images/{re.escape(name)}_\d+\.tif$")
    chips = (doc or {}).get("chips")
    if not isinstance(chips, list):
        return []
    files = [c.get("file") for c in chips if isinstance(c, dict)]
    return [out_dir / f for f in files if isinstance(f, str) and pattern.match(f)]


def build_sidecar(
    request: AcquireRequest,
    grid: Grid,
    items: list[ItemAssets],
    search: SearchResult,
    skipped: list[dict[str, str]],
    comp: CompositeResult,
    chips: list[dict[str, Any]],
    signing: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The JSON sidecar of a finished acquisition."""
    offsets: Counter[tuple[float, float, str]] = Counter()
    item_docs = []
    for it in items:
        stats = comp.items[it.item_id]
        for band in it.bands:
            offsets[(band.scale, band.offset, band.source)] += 1
        item_docs.append(
            {
                "id": it.item_id,
                "datetime": it.datetime.isoformat(),
                "solar_day": it.solar_day,
                "properties": it.properties,
                "assets": {a.band: a.to_json() for a in [*it.bands, *([it.scl] if it.scl else [])]},
                "covered_fraction": stats.covered / comp.total if comp.total else 0.0,
                "clear_fraction": stats.clear / stats.covered if stats.covered else None,
            }
        )
    days = group_by_day(items)
    return {
        "format": FORMAT,
        "pvdetect_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": request.to_json(),
        "catalog": {"name": request.catalog.name, "url": request.catalog.url},
        "collection": request.collection,
        "signing": signing,
        "search": {"matched": search.matched, "used": len(items), "selection": search.selection},
        "items": item_docs,
        "skipped_items": skipped,
        "dates": [
            {
                "date": day,
                "items": [it.item_id for it in day_items],
                "clear_fraction": comp.dates.get(day, 0) / comp.total if comp.total else 0.0,
            }
            for day, day_items in days.items()
        ],
        "offsets_applied": [
            {"scale": s, "offset": o, "source": src, "assets": n}
            for (s, o, src), n in offsets.items()
        ],
        "cloud_mask": {
            "asset": "SCL" if any(it.scl for it in items) else None,
            "masked_classes": list(request.mask_classes),
        },
        "grid": grid.to_json(),
        "output": {
            "image": f"{request.name}.tif",
            "format": "COG",
            "dtype": "int16",
            "values": "surface reflectance x 10000, per-pixel median of the clear observations",
            "bands": list(BAND_NAMES),
            "nodata": OUT_NODATA,
            "valid_fraction": comp.valid / comp.total if comp.total else 0.0,
            "block": comp.block,
        },
        "chips": chips,
        "warnings": warnings,
    }

"""The HTML report of a finished job: one self-contained file (styles and picture inside).

It says what was asked (area, dates), what imagery was used (catalog items or local scenes),
which model, and what was found: totals, the overlay picture, and one row per plant with its
area in hectares, probabilities and centre.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import shapely.geometry

from pvdetect import __version__
from pvdetect.io import write_text

__all__ = ["plant_rows", "write_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:left}th{background:#f4f4f4}td.n,th.n{text-align:right}
img{width:min(100%,800px);border:1px solid #ccc;image-rendering:pixelated}
.warn{color:#9a4b00}.small{color:#666;font-size:.9em}
"""


def plant_rows(geojson: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per plant of a WGS 84 GeoJSON: id, areas, probabilities, centre lon/lat."""
    rows = []
    for feature in geojson.get("features") or []:
        props = feature.get("properties") or {}
        geom = feature.get("geometry")
        centre = shapely.geometry.shape(geom).centroid if geom else None
        rows.append(
            {
                "id": props.get("id"),
                "area_ha": props.get("area_ha"),
                "area_m2": props.get("area_m2"),
                "mean_prob": props.get("mean_prob"),
                "max_prob": props.get("max_prob"),
                "lon": centre.x if centre is not None else None,
                "lat": centre.y if centre is not None else None,
            }
        )
    return rows


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="n"' if i in numeric else ""
        return f"<{tag}{cls}>{text}</{tag}>"

    head = "".join(cell("th", i, html.escape(h)) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, html.escape(v)) for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: Sequence[tuple[str, str]]) -> str:
    return _table(["", ""], list(items), set()).replace(
        "<thead><tr><th></th><th></th></tr></thead>", ""
    )


def _imagery(manifest: dict[str, Any]) -> str:
    imagery = manifest["imagery"]
    if imagery.get("kind") == "catalog":
        rows = [
            [str(it.get("id", "")), str(it.get("datetime", "")), _num(it.get("clear"), ".1%")]
            for it in imagery.get("items", [])
        ]
        text = (
            f"<p>Median composite of {len(rows)} item(s) of {html.escape(imagery['label'])}; "
            f"{_num(imagery.get('valid_fraction'), '.1%')} of the pixels have a clear "
            "observation.</p>"
        )
        return text + _table(["item", "time", "clear share of its footprint"], rows, {2})
    rows = [[name] for name in imagery.get("scenes", [])]
    text = f"<p>Cut from {len(rows)} local scene(s) of {html.escape(imagery['label'])}.</p>"
    return text + _table(["scene"], rows, set())


def write_report(
    path: Path, manifest: dict[str, Any], plants: Sequence[dict[str, Any]], overlay: Path | None
) -> Path:
    """Write the report of a job from its manifest, its plants and its overlay picture."""
    area, model = manifest["area"], manifest["model"]
    title = manifest.get("label") or f"job {manifest['id']}"
    bbox = ", ".join(f"{v:.5f}" for v in area["bbox"])
    facts = [
        ("area", area["description"]),
        ("WGS 84 box (W, S, E, N)", bbox),
        ("size", f"{area['width_km']:.2f} x {area['height_km']:.2f} km"),
        (
            "grid",
            f"{area['width_px']} x {area['height_px']} px of {area['resolution_m']:g} m, "
            f"{area['crs']}",
        ),
    ]
    dates = manifest.get("dates")
    if dates:
        facts.append(("dates", f"{dates['start']} to {dates['end']}"))
    facts.append(
        (
            "model",
            f"{model['arch']} / {model['encoder']} ({model['bundle']}), "
            f"threshold {model['threshold']:g}",
        )
    )
    total = sum(float(p.get("area_ha") or 0.0) for p in plants)
    largest = max((float(p.get("area_ha") or 0.0) for p in plants), default=0.0)
    totals = [
        ("plants", str(len(plants))),
        ("total area", f"{total:.2f} ha"),
        ("largest plant", f"{largest:.2f} ha"),
    ]
    rows = [
        [
            str(p["id"]),
            _num(p["area_ha"], ".3f"),
            _num(p["mean_prob"], ".3f"),
            _num(p["max_prob"], ".3f"),
            _num(p["lon"], ".5f"),
            _num(p["lat"], ".5f"),
        ]
        for p in sorted(plants, key=lambda p: -(p.get("area_ha") or 0.0))
    ]
    picture = ""
    if overlay is not None and overlay.is_file():
        data = base64.b64encode(overlay.read_bytes()).decode("ascii")
        picture = (
            '<h2>Overlay</h2><p class="small">The imagery with the plants outlined.</p>'
            f'<img alt="overlay" src="data:image/png;base64,{data}">'
        )
    warnings = "".join(f'<li class="warn">{html.escape(w)}</li>' for w in manifest["warnings"])
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} - pvdetect</title><style>{_STYLE}</style></head>
<body><h1>PV plants: {html.escape(title)}</h1>
<p class="small">Job {html.escape(manifest["id"])}, finished {html.escape(manifest["finished"])},
pvdetect {html.escape(__version__)}, {manifest["seconds"]:.1f} s.</p>
<h2>What was asked</h2>{_pairs(facts)}
<h2>Imagery</h2>{_imagery(manifest)}
<h2>Totals</h2>{_pairs(totals)}
{picture}
<h2>Plants</h2><p class="small">Areas on an equal-area projection; probabilities of the pixels
inside each plant; centre in WGS 84 degrees. The largest first.</p>
{
        _table(
            ["plant", "area (ha)", "mean probability", "max probability", "lon", "lat"],
            rows,
            {0, 1, 2, 3, 4, 5},
        )
    }
{f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else ""}
</body></html>
"""
    return write_text(path, doc)

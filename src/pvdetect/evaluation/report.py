"""The self-contained HTML report of an evaluation: the page, its tables and its sections.

Figures come from :mod:`pvdetect.evaluation.figures` as PNG bytes and are embedded as base64
``data:`` URIs; all text is escaped, and a few lines of inline JavaScript sort the tables
(numbers by value, text in natural order: ``test/2`` before ``test/10``), so a report is one
file that opens anywhere, offline.

The report is built from the ``metrics.json`` dict written by
:mod:`pvdetect.evaluation.engine` (plus the few chips drawn in the prediction grids), so a
report can be rebuilt from saved metrics.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pvdetect.evaluation.figures import (
    GridChip,
    fig_confusion,
    fig_pr_curve,
    fig_prediction_grid,
    fig_probability_histogram,
    fig_threshold_curves,
)

OBJECT_RULE = (
    "A plant is a connected region (8-connectivity) of PV pixels in the truth mask, within one "
    "chip; a detection is a connected region of predicted PV pixels. Every detection/plant pair "
    "with an intersection over union of at least {iou} is a candidate; candidates are matched "
    "one to one, highest IoU first. Matched pairs are hits, unmatched detections false "
    "positives, unmatched plants false negatives. Areas use the pixel size of each chip's "
    "transform (divided by the upscaling factor squared when evaluated at the upscaled "
    "resolution); the area error is detected minus true area."
)

# ----------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#222;line-height:1.4;padding:0 12px}
h1{font-size:1.5em}
h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:2em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e4e4e4}
.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid #eee}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.note{color:#555;font-size:13px}.warn{color:#a33}
img{max-width:100%}
"""

#: sorts a table by the clicked column: numbers (``data-v``) by value, text in natural order
JS = """
var pvCollator = new Intl.Collator(undefined, {numeric: true, sensitivity: 'base'});
function pvKey(cell) {
  var v = cell.getAttribute('data-v');
  return v === null ? cell.textContent.trim() : parseFloat(v);
}
function pvCompare(a, b) {
  if (typeof a === 'number' && typeof b === 'number') { return a < b ? -1 : a > b ? 1 : 0; }
  return pvCollator.compare(String(a), String(b));
}
function pvSort(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(th.parentNode.children);
  var col = heads.indexOf(th), asc = th.dataset.dir !== 'asc';
  heads.forEach(function (h) { h.dataset.dir = ''; });
  th.dataset.dir = asc ? 'asc' : 'desc';
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (x, y) {
    return pvCompare(pvKey(x.cells[col]), pvKey(y.cells[col])) * (asc ? 1 : -1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
"""


def esc(text: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(text), quote=True)


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: ints with separators, floats rounded, None/NaN as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return "&ndash;"
        return f"{float(value):.{digits}f}"
    return esc(value)


@dataclass(frozen=True)
class Cell:
    """A table cell that shows ``value`` and sorts by ``sort`` (e.g. a signed error by size)."""

    value: Any
    sort: float | None


def html_table(
    headers: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    *,
    sortable: bool = False,
    table_id: str | None = None,
    scroll: bool = False,
) -> str:
    """A table; numbers are formatted and carry their raw value for sorting.

    Args:
        headers: column titles; None for a table without a header row.
        rows: cell values (numbers, text, None, or :class:`Cell`).
        sortable: clicking a column title sorts the rows by it.
        table_id: ``id`` of the table.
        scroll: put the table in a scrolling box.
    """
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{esc(table_id)}"' if table_id else ""
    click = ' onclick="pvSort(this)"' if sortable else ""
    head = ""
    if headers is not None:
        head = (
            "<thead><tr>" + "".join(f"<th{click}>{esc(h)}</th>" for h in headers) + "</tr></thead>"
        )
    body = []
    for row in rows:
        cells = []
        for v in row:
            shown, raw = (
                (v.value, _sort_value(v.sort)) if isinstance(v, Cell) else (v, _sort_value(v))
            )
            attr = f' data-v="{esc(raw)}"' if raw is not None else ""
            cells.append(f"<td{attr}>{fmt(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table{cls}{tid}>{head}<tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def _sort_value(v: Any) -> str | None:
    if v is None:
        return "-1e300"
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
        return repr(f) if math.isfinite(f) else "-1e300"
    return None


def html_page(title: str, body: str) -> str:
    """A complete self-contained HTML page."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style><script>{JS}</script></head>"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def info_table(items: dict[str, Any]) -> str:
    """A two-column key/value table (no header row)."""
    return html_table(None, [[k, v] for k, v in items.items()])


def windows_row(data: dict[str, Any]) -> dict[str, str]:
    """The info-table row of an evaluation scored with ``--mirror-windows`` (none otherwise)."""
    return (
        {"windows": "mirrored over each chip (--mirror-windows)"}
        if data.get("windows_mirrored")
        else {}
    )


# -------------------------------------------------------------------- report composition

PIXEL_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "iou", "miou")
COMPARISON_HEADERS = (
    "model",
    "threshold",
    "precision",
    "recall",
    "F1",
    "IoU",
    "mIoU",
    "best F1 (this split)",
    "plant precision",
    "plant recall",
    "plant F1",
    "area error (ha)",
)
#: how metric names read in text
METRIC_NAMES = {"f1": "F1", "iou": "IoU", "miou": "mIoU"}


def _magnitude(value: Any) -> Cell:
    """A signed error shown as it is and sorted by its size."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return Cell(value, abs(float(value)) if ok else None)


def comparison_rows(entries: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows of the comparison table from ``{name: metrics}`` dicts of the common structure.

    The area error is shown signed and sorts by its magnitude (closest to the true area first).
    """
    rows = []
    for name, m in entries.items():
        px, th, ob = m.get("pixel", {}), m.get("threshold", {}), m.get("object", {})
        rows.append(
            [
                name,
                th.get("used"),
                px.get("precision"),
                px.get("recall"),
                px.get("f1"),
                px.get("iou"),
                px.get("miou"),
                (th.get("at_best") or {}).get("f1"),
                ob.get("precision"),
                ob.get("recall"),
                ob.get("f1"),
                _magnitude(ob.get("area_error_ha")),
            ]
        )
    return rows


def comparison_section(entries: dict[str, dict[str, Any]], note: str = "") -> str:
    """The model-beside-baselines table."""
    out = ["<h2>Comparison</h2>"]
    if note:
        out.append(f'<p class="note">{esc(note)}</p>')
    out.append(
        html_table(
            COMPARISON_HEADERS, comparison_rows(entries), sortable=True, table_id="comparison"
        )
    )
    out.append(
        '<p class="note">Area error: detected minus true plant area; the column sorts by its '
        "size, so the smallest error comes first whatever its sign.</p>"
    )
    return "\n".join(out)


def threshold_source(source: str) -> str:
    """Where the threshold came from, as text to put in parentheses.

    Reads ``"bundle, chosen on validation for F1"``; the older nested form
    ``"bundle (chosen on validation for f1)"`` of saved metrics reads the same.
    """
    text = str(source).strip()
    nested = re.fullmatch(r"(.*?)\s*\((.*)\)", text)
    if nested and nested.group(1):
        text = f"{nested.group(1)}, {nested.group(2)}"
    return re.sub(
        r"\b(f1|iou|miou)\b", lambda m: METRIC_NAMES[m.group(1).lower()], text, flags=re.I
    )


def threshold_text(used: float, source: str) -> str:
    """``0.4200 (bundle, chosen on validation for F1)``."""
    where = threshold_source(source)
    return f"{used:.4f} ({where})" if where else f"{used:.4f}"


def _overview(metrics: dict[str, Any]) -> str:
    """One line: split, chips, pixels, resolution and the threshold with its source."""
    px, th = metrics["pixel"], metrics["threshold"]
    data = metrics.get("data", {})
    return (
        f'<p class="note">split <b>{esc(data.get("split", "?"))}</b>: {fmt(data.get("n_images"))} '
        f"chips, {fmt(px.get('n_valid'))} valid pixels ({fmt(px.get('n_pv_true'))} PV), "
        f"resolution {esc(data.get('resolution', 'native'))}; threshold "
        f"{esc(threshold_text(float(th['used']), th.get('source', '')))}.</p>"
    )


def _pixel_section(px: dict[str, Any], th: dict[str, Any]) -> str:
    """Pixel metrics at the used and at the best-F1 threshold."""
    used = float(th["used"])
    best = th.get("at_best") or {}
    rows = [[k, px.get(k), best.get(k)] for k in (*PIXEL_KEYS, "tp", "fp", "fn", "tn")]
    headers = [
        "metric",
        f"at threshold {used:.3f}",
        f"at best-F1 threshold {float(th.get('best', used)):.3f} "
        "(chosen on this split: optimistic)",
    ]
    return "<h3>Pixel level (valid pixels only)</h3>\n" + html_table(headers, rows)


def _plots_section(px: dict[str, Any], th: dict[str, Any]) -> str:
    """Confusion matrix, probability histograms, PR and threshold curves."""
    used = float(th["used"])
    best = th.get("at_best") or {}
    figs = [img_tag(fig_confusion(px), "confusion matrix")]
    hist = th.get("histogram")
    if hist:
        png = fig_probability_histogram(hist["edges"], hist["pos"], hist["neg"], used)
        figs.append(img_tag(png, "probability distributions"))
    curve = th.get("curve")
    if curve:
        prevalence = px["n_pv_true"] / px["n_valid"] if px.get("n_valid") else None
        png = fig_pr_curve(
            curve["precision"],
            curve["recall"],
            chosen=_pair(px.get("recall"), px.get("precision")),
            best=_pair(best.get("recall"), best.get("precision")),
            prevalence=prevalence,
        )
        figs.append(img_tag(png, "precision-recall curve"))
        png = fig_threshold_curves(
            curve["thresholds"], curve["f1"], curve["iou"], chosen=used, best=th.get("best")
        )
        figs.append(img_tag(png, "F1 and IoU against threshold"))
    return '<div class="figs">' + "".join(figs) + "</div>"


def _object_section(ob: dict[str, Any]) -> str:
    """Plant-level counts, scores and areas, with the matching rule."""
    headers = [
        "true plants",
        "detections",
        "matched",
        "precision",
        "recall",
        "F1",
        "true area (ha)",
        "detected area (ha)",
        "area error (ha)",
        "mean abs. area error of matched plants (ha)",
    ]
    keys = ("n_true", "n_pred", "tp", "precision", "recall", "f1", "total_true_ha")
    keys += ("total_pred_ha", "area_error_ha", "mean_abs_area_error_ha")
    rule = esc(OBJECT_RULE.format(iou=ob.get("iou_threshold", 0.5)))
    return f'<h3>Object level (per plant)</h3>\n<p class="note">{rule}</p>\n' + html_table(
        headers, [[ob.get(k) for k in keys]]
    )


def _source_section(sources: dict[str, dict[str, Any]], anchor: str) -> str:
    """Pixel counts, scores and false-positive area per dataset (source, region)."""
    headers = ["dataset", "chips", "TP", "FP", "FN", "TN", "precision", "recall", "F1", "IoU"]
    headers += ["FP area (ha)", "FP ha per 100 km2"]
    rows = [
        [name, v.get("n_images"), v["tp"], v["fp"], v["fn"], v["tn"]]
        + [v.get(k) for k in ("precision", "recall", "f1", "iou", "fp_ha", "fp_ha_per_100km2")]
        for name, v in sources.items()
    ]
    table = html_table(headers, rows, sortable=True, table_id=f"{anchor}-sources")
    return (
        "<h3>Per dataset</h3>\n"
        '<p class="note">Counts add up to the pixel-level table; the FP area is the valid area '
        "predicted PV outside the labels.</p>\n" + table
    )


def _site_section(sites: dict[str, dict[str, Any]], anchor: str) -> str:
    """Pixel counts and scores per site (sortable)."""
    headers = ["site", "chips", "TP", "FP", "FN", "TN", "precision", "recall", "F1", "IoU"]
    rows = [
        [s, v.get("n_images"), v["tp"], v["fp"], v["fn"], v["tn"]]
        + [v.get(k) for k in ("precision", "recall", "f1", "iou")]
        for s, v in sites.items()
    ]
    table = html_table(headers, rows, sortable=True, table_id=f"{anchor}-sites", scroll=True)
    return "<h3>Per site</h3>\n" + table


def _grid_section(grids: Sequence[GridChip]) -> str:
    """The best and worst chips: image, truth, probability and errors."""
    return (
        "<h3>Best and worst chips (by per-image IoU, chips with PV or predictions)</h3>\n"
        '<p class="note">Errors: TP white, FP red, FN blue, TN dark, nodata or '
        "unlabelled grey.</p>\n" + img_tag(fig_prediction_grid(grids), "prediction grid")
    )


def _per_image_section(per: Sequence[dict[str, Any]], anchor: str) -> str:
    """Pixel counts and scores per chip (sortable; keys in natural order)."""
    several = bool(per) and "source" in per[0]
    headers = ["key", "site", "TP", "FP", "FN", "TN", "precision", "recall", "F1", "IoU"]
    headers += ["PV px true", "PV px pred"]
    rows = [
        [r["key"], r["site"], r["tp"], r["fp"], r["fn"], r["tn"]]
        + [r.get(k) for k in ("precision", "recall", "f1", "iou")]
        + [r["pv_true"], r["pv_pred"]]
        for r in per
    ]
    if several:  # chips of several datasets: which one
        headers.insert(0, "dataset")
        rows = [[r["source"], *row] for r, row in zip(per, rows, strict=True)]
    table = html_table(headers, rows, sortable=True, table_id=f"{anchor}-per-image", scroll=True)
    return f"<h3>Per image ({len(per)} chips; click a header to sort)</h3>\n" + table


def evaluation_section(
    metrics: dict[str, Any],
    grids: Sequence[GridChip] = (),
    *,
    heading: str | None = None,
    compact: bool = False,
    anchor: str = "eval",
) -> str:
    """HTML of one evaluation: metrics, plots, threshold analysis, objects, tables, grids.

    Args:
        metrics: the metrics dict of :func:`pvdetect.evaluation.engine.evaluate_predictor`.
        grids: chips for the best/worst prediction grid.
        heading: optional ``<h2>`` title of the section.
        compact: leave out the per-image table (used for baselines).
        anchor: id prefix for the section's tables.
    """
    px, th, ob = metrics["pixel"], metrics["threshold"], metrics["object"]
    out: list[str] = []
    if heading:
        out.append(f'<h2 id="{esc(anchor)}">{esc(heading)}</h2>')
    out += [_overview(metrics), _pixel_section(px, th), _plots_section(px, th)]
    out.append(_object_section(ob))
    if len(metrics.get("per_source") or {}) > 1:
        out.append(_source_section(metrics["per_source"], anchor))
    if metrics.get("per_site"):
        out.append(_site_section(metrics["per_site"], anchor))
    if grids:
        out.append(_grid_section(grids))
    if not compact:
        out.append(_per_image_section(metrics.get("per_image") or [], anchor))
    return "\n".join(out)


def _pair(a: Any, b: Any) -> tuple[float, float] | None:
    if a is None or b is None:
        return None
    return (float(a), float(b))


def summary_line(name: str, px: dict[str, Any], th: dict[str, Any], ob: dict[str, Any]) -> str:
    """One line of the headline numbers."""

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    return (
        f"{name}: threshold {th['used']:.3f}  F1 {f(px.get('f1'))}  IoU {f(px.get('iou'))}  "
        f"precision {f(px.get('precision'))}  recall {f(px.get('recall'))}  "
        f"plant F1 {f(ob.get('f1'))}  (best F1 {f((th.get('at_best') or {}).get('f1'))} at "
        f"{th['best']:.3f} on this split)"
    )

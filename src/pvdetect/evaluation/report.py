"""Plots and the self-contained HTML report of an evaluation.

Figure functions draw with matplotlib's Agg backend and return PNG bytes; the HTML builder
embeds them as base64 ``data:`` URIs, escapes all text and adds a few lines of inline
JavaScript to sort tables, so a report is one file that opens anywhere, offline.

The report is built from the ``metrics.json`` dict written by :mod:`pvdetect.evaluation.engine` (plus
the few chips drawn in the prediction grids), so a report can be rebuilt from saved metrics.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: colours of the error map (RGB 0-255)
COLOURS = {
    "tn": (20, 20, 20),
    "tp": (255, 255, 255),
    "fp": (228, 26, 28),
    "fn": (55, 126, 255),
    "ignore": (128, 128, 128),
}

OBJECT_RULE = (
    "A plant is a connected region (8-connectivity) of PV pixels in the truth mask, within one "
    "chip; a detection is a connected region of predicted PV pixels. Every detection/plant pair "
    "with an intersection over union of at least {iou} is a candidate; candidates are matched "
    "one to one, highest IoU first. Matched pairs are hits, unmatched detections false "
    "positives, unmatched plants false negatives. Areas use the pixel size of each chip's "
    "transform (divided by the upscaling factor squared when evaluated at the upscaled "
    "resolution); the area error is detected minus true area."
)


@dataclass
class GridChip:
    """One chip drawn in a prediction grid.

    Attributes:
        key: chip key.
        site: site id.
        label: why it is shown, e.g. ``"best 1"``.
        score: the per-image score used to pick it (IoU).
        rgb: uint8 ``[H, W, 3]`` stretched true-colour image.
        truth: uint8 ``[H, W]`` mask, 0/1, 255 = ignored.
        prob: float32 ``[H, W]`` predicted probability.
        threshold: decision threshold for the prediction.
    """

    key: str
    site: str
    label: str
    score: float | None
    rgb: np.ndarray
    truth: np.ndarray
    prob: np.ndarray
    threshold: float


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 90) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------- images


def rgb_stretch(
    raw: np.ndarray,
    valid: np.ndarray,
    p2: Sequence[float],
    p98: Sequence[float],
    bands: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """True-colour uint8 ``[H, W, 3]`` from raw ``[C, H, W]``, stretched between p2 and p98.

    The stretch uses the training-split band percentiles (never per-image min/max), so chips
    are comparable; invalid pixels are drawn grey.
    """
    out = np.empty((*raw.shape[1:], 3), dtype=np.uint8)
    for i, b in enumerate(bands):
        lo, hi = float(p2[b]), float(p98[b])
        scale = hi - lo if hi > lo else 1.0
        out[..., i] = np.clip((raw[b] - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    out[~valid.astype(bool)] = COLOURS["ignore"]
    return out


def error_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: TP white, FP red, FN blue, TN dark, ignored (255) grey."""
    pred = pred.astype(bool)
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = COLOURS["tn"]
    t1, t0 = truth == 1, truth == 0
    out[pred & t1] = COLOURS["tp"]
    out[pred & t0] = COLOURS["fp"]
    out[~pred & t1] = COLOURS["fn"]
    out[truth == 255] = COLOURS["ignore"]
    return out


def truth_image(truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: PV white, background dark, ignored grey."""
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = COLOURS["tn"]
    out[truth == 1] = COLOURS["tp"]
    out[truth == 255] = COLOURS["ignore"]
    return out


# -------------------------------------------------------------------------------- figures


def fig_confusion(conf: dict[str, Any], title: str = "Confusion matrix") -> bytes:
    """2x2 confusion matrix with counts and shares of the true class (rows = truth)."""
    plt = _plt()
    m = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]], dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{int(m[i, j]):,}\n{share[i, j]:.1%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    ax.set_xticks([0, 1], ["background", "PV"])
    ax.set_yticks([0, 1], ["background", "PV"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def fig_probability_histogram(
    edges: Sequence[float],
    pos: Sequence[float],
    neg: Sequence[float],
    threshold: float,
    title: str = "Predicted probability",
) -> bytes:
    """Distributions of the predicted probability of true PV and true background pixels."""
    plt = _plt()
    edges_a = np.asarray(edges, dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for counts, name, colour in ((neg, "background", "#4d4d4d"), (pos, "PV", "#e6550d")):
        c = np.asarray(counts, dtype=float)
        total = c.sum()
        dens = c / total if total > 0 else c
        ax.stairs(
            dens,
            edges_a,
            label=f"{name} ({int(total):,} px)",
            color=colour,
            fill=False,
            linewidth=1.5,
        )
    ax.axvline(
        threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}"
    )
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted PV probability")
    ax.set_ylabel("share of pixels of the class")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_pr_curve(
    precision: Sequence[float],
    recall: Sequence[float],
    chosen: tuple[float, float] | None = None,
    best: tuple[float, float] | None = None,
    prevalence: float | None = None,
    title: str = "Precision-recall",
) -> bytes:
    """Precision against recall over the sweep; ``chosen``/``best`` are (recall, precision)."""
    plt = _plt()
    p, r = _finite_pairs(precision, recall)
    # thresholds with no true positive (no prediction at all near 1.0) carry no PR information
    keep = (p > 0) | (r > 0)
    p, r = p[keep], r[keep]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot(r, p, color="#3182bd", linewidth=1.5)
    if prevalence is not None and prevalence > 0:
        ax.axhline(prevalence, color="grey", linestyle=":", linewidth=1, label="random")
    if chosen is not None:
        ax.plot(*chosen, "o", color="k", label="used threshold")
    if best is not None:
        ax.plot(*best, "*", color="#e6550d", markersize=11, label="best F1 (on this split)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def fig_threshold_curves(
    thresholds: Sequence[float],
    f1: Sequence[float],
    iou: Sequence[float],
    chosen: float | None = None,
    best: float | None = None,
    title: str = "F1 and IoU against the threshold",
) -> bytes:
    """F1 and IoU of the PV class against the decision threshold."""
    plt = _plt()
    t = np.asarray(thresholds, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.plot(t, _nan(f1), label="F1", color="#3182bd")
    ax.plot(t, _nan(iou), label="IoU", color="#31a354")
    if chosen is not None:
        ax.axvline(chosen, color="k", linestyle="--", linewidth=1, label="used threshold")
    if best is not None:
        ax.axvline(best, color="#e6550d", linestyle=":", linewidth=1.3, label="best F1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("threshold")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def prob_image(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` probability in the magma colour map; ignored pixels grey."""
    cmap = _plt().get_cmap("magma")
    out = (cmap(np.clip(prob, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)
    out[truth == 255] = COLOURS["ignore"]
    return out


def prediction_mosaic(chips: Sequence[GridChip], cell: int = 96, gap: int = 4) -> np.ndarray:
    """One uint8 RGB image: a row per chip of RGB | truth | probability | errors panels.

    Panels are enlarged by an integer factor (nearest) so the largest chip fills ``cell``
    pixels; smaller chips are centred on white.
    """
    side = max(max(c.truth.shape) for c in chips)
    step = max(1, math.ceil(side / 256))  # large chips are thinned to keep the report small
    if step > 1:
        chips = [
            GridChip(
                c.key,
                c.site,
                c.label,
                c.score,
                c.rgb[::step, ::step],
                c.truth[::step, ::step],
                c.prob[::step, ::step],
                c.threshold,
            )
            for c in chips
        ]
        side = max(max(c.truth.shape) for c in chips)
    k = max(1, cell // side)
    s = side * k
    n = len(chips)
    out = np.full((n * s + (n - 1) * gap, 4 * s + 3 * gap, 3), 255, dtype=np.uint8)
    for r, chip in enumerate(chips):
        pred = chip.prob >= chip.threshold
        panels = (
            chip.rgb,
            truth_image(chip.truth),
            prob_image(chip.prob, chip.truth),
            error_image(pred, chip.truth),
        )
        for c, img in enumerate(panels):
            big = img.repeat(k, 0).repeat(k, 1)
            h, w = big.shape[:2]
            y0 = r * (s + gap) + (s - h) // 2
            x0 = c * (s + gap) + (s - w) // 2
            out[y0 : y0 + h, x0 : x0 + w] = big
    return out


def fig_prediction_grid(chips: Sequence[GridChip], title: str = "") -> bytes:
    """Rows of RGB | truth | probability | errors (TP white, FP red, FN blue, ignored grey)."""
    plt = _plt()
    if not chips:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0, 0.5, "no chips with PV or predictions", fontsize=9)
        return _png(fig)
    cell, gap = 96, 4
    mosaic = prediction_mosaic(chips, cell, gap)
    h, w = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(w / 80 + 1.6, h / 80 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    s = (w - 3 * gap) // 4
    rs = (h - (len(chips) - 1) * gap) // len(chips)
    ax.set_xticks(
        [c * (s + gap) + s / 2 for c in range(4)],
        ["RGB (p2-p98)", "truth", "probability", "errors"],
        fontsize=9,
    )
    ax.xaxis.tick_top()
    labels = []
    for chip in chips:
        score = "n/a" if chip.score is None else f"{chip.score:.3f}"
        labels.append(f"{chip.label}\n{_short(chip.key)}\nIoU {score}")
    ax.set_yticks([r * (rs + gap) + rs / 2 for r in range(len(chips))], labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig, dpi=80)


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3) :]


def _nan(values: Iterable[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _finite_pairs(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _nan(a), _nan(b)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


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

_JS = """
function pvSort(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(th.parentNode.children);
  var col = heads.indexOf(th), asc = th.dataset.dir !== 'asc';
  heads.forEach(function (h) { h.dataset.dir = ''; });
  th.dataset.dir = asc ? 'asc' : 'desc';
  function key(row) {
    var cell = row.cells[col], s = cell.getAttribute('data-v');
    if (s === null) { return cell.textContent.toLowerCase(); }
    return parseFloat(s);
  }
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (x, y) {
    var a = key(x), b = key(y);
    if (typeof a !== typeof b) { a = String(a); b = String(b); }
    return (a < b ? -1 : a > b ? 1 : 0) * (asc ? 1 : -1);
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


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    sortable: bool = False,
    table_id: str | None = None,
    scroll: bool = False,
) -> str:
    """A table; numbers are formatted and carry their raw value for sorting."""
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{esc(table_id)}"' if table_id else ""
    click = ' onclick="pvSort(this)"' if sortable else ""
    head = "".join(f"<th{click}>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            raw = _sort_value(v)
            attr = f' data-v="{esc(raw)}"' if raw is not None else ""
            cells.append(f"<td{attr}>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table{cls}{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
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
        f"<title>{esc(title)}</title><style>{_CSS}</style><script>{_JS}</script></head>"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
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


def comparison_rows(entries: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows of the comparison table from ``{name: metrics}`` dicts of the common structure."""
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
                ob.get("area_error_ha"),
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
    return "\n".join(out)


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
    used = float(th["used"])
    out: list[str] = []
    if heading:
        out.append(f'<h2 id="{esc(anchor)}">{esc(heading)}</h2>')
    data = metrics.get("data", {})
    out.append(
        f'<p class="note">split <b>{esc(data.get("split", "?"))}</b>: {fmt(data.get("n_images"))} '
        f"chips, {fmt(px.get('n_valid'))} valid pixels ({fmt(px.get('n_pv_true'))} PV), "
        f"resolution {esc(data.get('resolution', 'native'))}; threshold {used:.4f} "
        f"({esc(th.get('source', ''))}).</p>"
    )
    # pixel metrics at the used and at the best threshold
    best = th.get("at_best") or {}
    rows = [[k, px.get(k), best.get(k)] for k in PIXEL_KEYS]
    rows += [[k, px.get(k), best.get(k)] for k in ("tp", "fp", "fn", "tn")]
    out.append("<h3>Pixel level (valid pixels only)</h3>")
    out.append(
        html_table(
            [
                "metric",
                f"at threshold {used:.3f}",
                f"at best-F1 threshold {float(th.get('best', used)):.3f} "
                "(chosen on this split: optimistic)",
            ],
            rows,
        )
    )
    figs = [img_tag(fig_confusion(px), "confusion matrix")]
    hist = th.get("histogram")
    if hist:
        figs.append(
            img_tag(
                fig_probability_histogram(hist["edges"], hist["pos"], hist["neg"], used),
                "probability distributions",
            )
        )
    curve = th.get("curve")
    if curve:
        prevalence = px["n_pv_true"] / px["n_valid"] if px.get("n_valid") else None
        figs.append(
            img_tag(
                fig_pr_curve(
                    curve["precision"],
                    curve["recall"],
                    chosen=_pair(px.get("recall"), px.get("precision")),
                    best=_pair(best.get("recall"), best.get("precision")),
                    prevalence=prevalence,
                ),
                "precision-recall curve",
            )
        )
        figs.append(
            img_tag(
                fig_threshold_curves(
                    curve["thresholds"], curve["f1"], curve["iou"], chosen=used, best=th.get("best")
                ),
                "F1 and IoU against threshold",
            )
        )
    out.append('<div class="figs">' + "".join(figs) + "</div>")

    out.append("<h3>Object level (per plant)</h3>")
    out.append(f'<p class="note">{esc(OBJECT_RULE.format(iou=ob.get("iou_threshold", 0.5)))}</p>')
    out.append(
        html_table(
            [
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
            ],
            [
                [
                    ob.get("n_true"),
                    ob.get("n_pred"),
                    ob.get("tp"),
                    ob.get("precision"),
                    ob.get("recall"),
                    ob.get("f1"),
                    ob.get("total_true_ha"),
                    ob.get("total_pred_ha"),
                    ob.get("area_error_ha"),
                    ob.get("mean_abs_area_error_ha"),
                ]
            ],
        )
    )

    sites = metrics.get("per_site") or {}
    if sites:
        out.append("<h3>Per site</h3>")
        out.append(
            html_table(
                ["site", "chips", "TP", "FP", "FN", "TN", "precision", "recall", "F1", "IoU"],
                [
                    [
                        s,
                        v.get("n_images"),
                        v["tp"],
                        v["fp"],
                        v["fn"],
                        v["tn"],
                        v.get("precision"),
                        v.get("recall"),
                        v.get("f1"),
                        v.get("iou"),
                    ]
                    for s, v in sites.items()
                ],
                sortable=True,
                table_id=f"{anchor}-sites",
                scroll=True,
            )
        )

    if grids:
        out.append("<h3>Best and worst chips (by per-image IoU, chips with PV or predictions)</h3>")
        out.append(
            '<p class="note">Errors: TP white, FP red, FN blue, TN dark, nodata or '
            "unlabelled grey.</p>"
        )
        out.append(img_tag(fig_prediction_grid(grids), "prediction grid"))

    if not compact:
        per = metrics.get("per_image") or []
        out.append(f"<h3>Per image ({len(per)} chips; click a header to sort)</h3>")
        out.append(
            html_table(
                [
                    "key",
                    "site",
                    "TP",
                    "FP",
                    "FN",
                    "TN",
                    "precision",
                    "recall",
                    "F1",
                    "IoU",
                    "PV px true",
                    "PV px pred",
                ],
                [
                    [
                        r["key"],
                        r["site"],
                        r["tp"],
                        r["fp"],
                        r["fn"],
                        r["tn"],
                        r.get("precision"),
                        r.get("recall"),
                        r.get("f1"),
                        r.get("iou"),
                        r["pv_true"],
                        r["pv_pred"],
                    ]
                    for r in per
                ],
                sortable=True,
                table_id=f"{anchor}-per-image",
                scroll=True,
            )
        )
    return "\n".join(out)


def _pair(a: Any, b: Any) -> tuple[float, float] | None:
    if a is None or b is None:
        return None
    return (float(a), float(b))


def info_table(items: dict[str, Any]) -> str:
    """A two-column key/value table."""
    return html_table(["", ""], [[k, v] for k, v in items.items()])


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

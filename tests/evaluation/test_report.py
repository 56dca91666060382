"""Tests of pvdetect.evaluation.report: tables, sections, sorting, a self-contained page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from pvdetect.evaluation import report as r


def test_html_table_escapes_and_sorts() -> None:
    html = r.html_table(
        ["<b>key</b>", "x"], [["<script>", 0.5], ["a&b", None]], sortable=True, table_id="t1"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&amp;b" in html
    assert "&lt;b&gt;key&lt;/b&gt;" in html
    assert 'id="t1"' in html and 'onclick="pvSort(this)"' in html
    assert 'data-v="0.5"' in html and "0.5000" in html and "&ndash;" in html
    assert r.fmt(1234567) == "1,234,567" and r.fmt(float("nan")) == "&ndash;"


def _metrics() -> dict:
    px = {
        "tp": 50,
        "fp": 10,
        "fn": 5,
        "tn": 1000,
        "accuracy": 0.98,
        "precision": 0.83,
        "recall": 0.9,
        "specificity": 0.99,
        "f1": 0.87,
        "iou": 0.77,
        "miou": 0.88,
        "n_valid": 1065,
        "n_pv_true": 55,
        "n_pv_pred": 60,
    }
    t = np.linspace(0, 1, 11).tolist()
    return {
        "model": {"name": "m"},
        "data": {"split": "test", "n_images": 1, "resolution": "native"},
        "pixel": px,
        "threshold": {
            "used": 0.5,
            "source": "bundle",
            "best": 0.4,
            "at_best": dict(px),
            "curve": {"thresholds": t, "precision": t[::-1], "recall": t, "f1": t, "iou": t},
            "histogram": {"edges": t, "pos": [1] * 10, "neg": [2] * 10},
        },
        "object": {
            "iou_threshold": 0.5,
            "n_true": 2,
            "n_pred": 2,
            "tp": 1,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "total_true_ha": 0.55,
            "total_pred_ha": 0.6,
            "area_error_ha": 0.05,
            "mean_abs_area_error_ha": 0.1,
        },
        "per_site": {"s<1>": {"n_images": 1, **px}},
        "per_image": [
            {
                "key": "test/<1>",
                "site": "s<1>",
                "tp": 50,
                "fp": 10,
                "fn": 5,
                "tn": 1000,
                "precision": 0.83,
                "recall": 0.9,
                "f1": 0.87,
                "iou": 0.77,
                "pv_true": 55,
                "pv_pred": 60,
            }
        ],
    }


def test_page_is_self_contained() -> None:
    m = _metrics()
    body = r.comparison_section({"model": m, "random": m}, note="n") + r.evaluation_section(
        m, heading="Model", anchor="model"
    )
    page = r.html_page("report <1>", body)
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>report &lt;1&gt;</title>" in page
    assert "test/&lt;1&gt;" in page and "s&lt;1&gt;" in page
    assert 'id="model-per-image"' in page and 'id="comparison"' in page
    assert page.count("data:image/png;base64,") == 4  # confusion, histogram, PR, threshold
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "IoU &gt;= 0.5" in page or "at least 0.5" in page  # the matching rule is stated
    compact = r.evaluation_section(m, compact=True)
    assert "per-image" not in compact


class _Tables(HTMLParser):
    """The tables of a page: id, header rows (cell texts) and body rows (data-v, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self._part = ""
        self._cell: dict[str, Any] | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"id": a.get("id"), "head": [], "body": []})
            self._part = "body"
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif tag == "tr" and self.tables:
            self.tables[-1][self._part].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = {"v": a.get("data-v"), "t": ""}
            self.tables[-1][self._part][-1].append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._cell is not None:
            self._cell["t"] += data


def _parse(page: str) -> _Tables:
    p = _Tables()
    p.feed(page)
    return p


def _table(page: str, table_id: str) -> dict[str, Any]:
    return next(t for t in _parse(page).tables if t["id"] == table_id)


def _metrics_named(name: str, area_error: float, keys: list[str]) -> dict:
    m = _metrics()
    m["model"]["name"] = name
    m["object"]["area_error_ha"] = area_error
    m["threshold"]["source"] = "bundle (chosen on validation for f1)"  # as metrics.json had it
    m["threshold"]["used"] = 0.42
    m["per_image"] = [dict(m["per_image"][0], key=k) for k in keys]
    return m


def _report(keys: list[str] | None = None) -> str:
    """A report page as the engine composes it: info table, comparison, model section."""
    keys = keys or ["test/1"]
    model = _metrics_named("model", -103.0, keys)
    entries = {
        "model": model,
        "random": _metrics_named("random", -19.0, keys),
        "logistic": _metrics_named("logistic", 250.5, keys),
        "nir_threshold": _metrics_named("nir_threshold", 40.0, keys),
    }
    body = [
        r.info_table({"bundle": "b", "threshold": "0.4200 (bundle, chosen on validation for F1)"}),
        r.comparison_section(entries, note="baselines fitted here"),
        r.evaluation_section(model, heading="Model", anchor="model"),
    ]
    return r.html_page("pvdetect evaluation: test", "\n".join(body))


def _node_sort(table: dict[str, Any], column: int, clicks: int = 1) -> list[int]:
    """Row order after clicking header ``column`` ``clicks`` times: the page's own pvSort,
    run in node on a minimal stand-in for the DOM built from the parsed table."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node is needed to run the report's JavaScript")
        pytest.skip("node not installed")
    harness = (
        r.JS
        + """
const t = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const body = {rows: t.body.map((cells, i) => ({id: i, cells: cells.map((c) => ({
  getAttribute: (k) => (k === 'data-v' ? c.v : null), textContent: c.t}))})),
  appendChild(row) { this.rows.splice(this.rows.indexOf(row), 1); this.rows.push(row); }};
const table = {tBodies: [body]};
const tr = {children: []};
tr.children = t.head[0].map(() => ({dataset: {dir: ''}, parentNode: tr, closest: () => table}));
for (let i = 0; i < t.clicks; i++) { pvSort(tr.children[t.column]); }
console.log(JSON.stringify(body.rows.map((row) => row.id)));
"""
    )
    data = json.dumps(table | {"column": column, "clicks": clicks})
    done = subprocess.run(
        [node, "-e", harness], input=data, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_no_empty_header_row() -> None:
    """The info table drew an empty grey header row (its headers were two empty strings)."""
    tables = _parse(_report()).tables
    assert len(tables) >= 5
    for t in tables:
        for row in t["head"]:
            assert any(c["t"].strip() for c in row), f"empty header row in table {t['id']}"
    info = tables[0]
    assert info["head"] == [] and [c["t"] for c in info["body"][0]] == ["bundle", "b"]


def test_comparison_sorts_area_error_by_magnitude() -> None:
    page = _report()
    table = _table(page, "comparison")
    names = [row[0]["t"] for row in table["body"]]
    col = [c["t"] for c in table["head"][0]].index("area error (ha)")
    shown = [row[col]["t"] for row in table["body"]]
    assert shown == ["-103.0000", "-19.0000", "250.5000", "40.0000"]  # the sign is shown
    order = _node_sort(table, col)
    assert [names[i] for i in order] == ["random", "nir_threshold", "model", "logistic"]
    order = _node_sort(table, col, clicks=2)  # second click: largest error first
    assert [names[i] for i in order] == ["logistic", "model", "nir_threshold", "random"]


def test_key_column_sorts_in_natural_order() -> None:
    keys = ["test/10", "test/2", "val/1", "test/1", "Test/3", "test/21"]
    table = _table(_report(keys), "model-per-image")
    order = _node_sort(table, 0)
    assert [keys[i] for i in order] == ["test/1", "test/2", "Test/3", "test/10", "test/21", "val/1"]
    tp = [c["t"] for c in table["head"][0]].index("TP")  # numbers still sort by value
    table["body"][0][tp]["v"] = "100.0"
    table["body"][1][tp]["v"] = "9.0"  # the others have 50
    order = _node_sort(table, tp)
    assert order[0] == 1 and order[-1] == 0


@pytest.mark.parametrize(
    "source", ["bundle (chosen on validation for f1)", "bundle, chosen on validation for F1"]
)
def test_threshold_source_reads_well(source: str) -> None:
    m = _metrics()
    m["threshold"].update(used=0.42, source=source)
    del m["threshold"]["curve"], m["threshold"]["histogram"]  # fewer figures to draw
    text = _parse(r.evaluation_section(m)).text
    assert "threshold 0.4200 (bundle, chosen on validation for F1)." in text
    assert "((" not in text and "))" not in text
    assert r.threshold_text(0.5, "command line") == "0.5000 (command line)"
    assert r.threshold_text(0.5, "fitted on the training split") == (
        "0.5000 (fitted on the training split)"
    )

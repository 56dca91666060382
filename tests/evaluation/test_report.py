"""Tests of pvdetect.evaluation.report: images, figures, escaping, a self-contained page."""

from __future__ import annotations

import io
import re

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from PIL import Image

from pvdetect.evaluation import report as r

PNG = b"\x89PNG\r\n\x1a\n"


def test_rgb_stretch_uses_given_percentiles() -> None:
    raw = np.zeros((4, 2, 2), np.float32)
    raw[0] = [[100, 200], [300, 50]]
    raw[1] = 150
    raw[2] = 400
    valid = np.array([[True, True], [True, False]])
    out = r.rgb_stretch(raw, valid, p2=[100, 100, 100, 0], p98=[300, 200, 300, 1])
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 127 and out[1, 0, 0] == 255  # linear, clipped
    assert out[0, 0, 1] == 127 and out[0, 0, 2] == 255
    assert tuple(out[1, 1]) == r.COLOURS["ignore"]


def test_error_image_colours() -> None:
    truth = np.array([[1, 0, 1, 0, 255]], np.uint8)
    pred = np.array([[1, 1, 0, 0, 1]], bool)
    out = r.error_image(pred, truth)
    names = ["tp", "fp", "fn", "tn", "ignore"]
    assert [tuple(px) for px in out[0]] == [r.COLOURS[n] for n in names]
    assert len({r.COLOURS[n] for n in names}) == 5


def _decode(
    png: bytes, figsize: tuple[float, float], dpi: int = 90, slack: float = 0.25
) -> np.ndarray:
    """The RGB pixels of a PNG of about ``figsize`` x ``dpi`` (a tight box adds or cuts a bit)."""
    assert png.startswith(PNG)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w = img.shape[:2]
    for got, inches in ((w, figsize[0]), (h, figsize[1])):
        assert (1 - slack) * inches * dpi <= got <= (1 + slack) * inches * dpi, (w, h, figsize)
    assert (img < 250).any(axis=-1).mean() > 0.02  # not a blank page
    return img


def _pixels_of(img: np.ndarray, colour: str | tuple[int, int, int], tol: int = 20) -> int:
    """Pixels drawn in ``colour``, also where anti-aliasing blends it with the white page."""
    rgb = np.array(mcolors.to_rgb(colour) if isinstance(colour, str) else colour, float)
    rgb = rgb * 255 if rgb.max() <= 1 else rgb
    shades = [255 + a * (rgb - 255) for a in (0.5, 0.65, 0.8, 1.0)]
    dist = np.min([np.abs(img.astype(float) - c).max(axis=-1) for c in shades], axis=0)
    return int((dist <= tol).sum())


def test_figures_are_decodable_pngs_showing_their_data() -> None:
    conf = {"tp": 5, "fp": 2, "fn": 1, "tn": 100}
    img = _decode(r.fig_confusion(conf), (3.8, 3.4))
    blues = matplotlib.colormaps["Blues"]
    for share in (100 / 102, 2 / 102, 1 / 6, 5 / 6):  # each cell coloured by its row share
        assert _pixels_of(img, tuple(round(255 * v) for v in blues(share)[:3]), 3) > 2000, share
    edges = np.linspace(0, 1, 11)
    pos = [0, 0, 0, 0, 1, 2, 3, 5, 8, 13]
    neg = [20, 13, 8, 5, 3, 2, 1, 0, 0, 0]
    img = _decode(r.fig_probability_histogram(edges, pos, neg, 0.5), (5.2, 3.2))
    assert _pixels_of(img, "#e6550d") > 200  # PV
    assert _pixels_of(img, "#4d4d4d") > 200  # background
    t = np.linspace(0, 1, 11)
    img = _decode(
        r.fig_pr_curve(1 - t, t, chosen=(0.5, 0.5), best=(0.6, 0.6), prevalence=0.1), (4.2, 3.6)
    )
    assert _pixels_of(img, "#3182bd") > 200  # the curve
    assert _pixels_of(img, "#e6550d") > 40  # the best-F1 star
    plain = _decode(r.fig_pr_curve(1 - t, t), (4.2, 3.6))
    assert _pixels_of(plain, "#e6550d") == 0  # no star without a best point
    img = _decode(r.fig_threshold_curves(t, t, t * 0.8, chosen=0.5, best=0.4), (4.8, 3.4))
    assert _pixels_of(img, "#3182bd") > 200 and _pixels_of(img, "#31a354") > 200  # F1, IoU
    assert _pixels_of(img, "#e6550d") > 40  # the best-threshold line
    img = _decode(r.fig_prediction_grid([]), (4, 1))
    assert (img.max(axis=-1) < 80).sum() > 30  # the "no chips" text


def test_prediction_mosaic_layout() -> None:
    chip = r.GridChip(
        "k",
        "s",
        "best 1",
        0.5,
        np.full((10, 8, 3), 7, np.uint8),
        np.ones((10, 8), np.uint8),
        np.full((10, 8), 0.9, np.float32),
        0.5,
    )
    small = r.GridChip(
        "k2",
        "s",
        "worst 1",
        None,
        np.full((4, 4, 3), 7, np.uint8),
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4), np.float32),
        0.5,
    )
    m = r.prediction_mosaic([chip, small], cell=40, gap=2)
    k = 40 // 10
    assert m.shape == (2 * 10 * k + 2, 4 * 10 * k + 3 * 2, 3)
    # errors panel of row 0 is all true positives (white), row 1 all true negatives (dark)
    x_err = 3 * (10 * k + 2) + 10 * k // 2
    assert tuple(m[10 * k // 2, x_err]) == r.COLOURS["tp"]
    assert tuple(m[10 * k + 2 + 10 * k // 2, x_err]) == r.COLOURS["tn"]
    png = r.fig_prediction_grid([chip, small])
    # the figure is sized to its mosaic (96 px cells); the chip labels widen the tight box
    h, w = r.prediction_mosaic([chip, small], cell=96, gap=4).shape[:2]
    img = _decode(png, (w / 80 + 1.6, h / 80 + 0.5), dpi=80, slack=0.5)
    assert _pixels_of(img, (7, 7, 7), 2) > 300  # the RGB panels
    assert _pixels_of(img, r.COLOURS["tn"], 2) > 300  # errors of the second chip
    magma = tuple(round(255 * v) for v in matplotlib.colormaps["magma"](0.9)[:3])
    assert _pixels_of(img, magma, 4) > 300  # probability 0.9 of the first chip


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

"""Tests of pvdetect.evaluation.figures: chip images, plots, and a readable prediction grid."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from PIL import Image
from scipy import ndimage

from pvdetect.evaluation import figures as f

PNG = b"\x89PNG\r\n\x1a\n"
#: widest image the report shows at its own size (page max-width 1180 px less 2 x 12 px padding)
PAGE_WIDTH = 1156


def test_rgb_stretch_uses_given_percentiles() -> None:
    raw = np.zeros((4, 2, 2), np.float32)
    raw[0] = [[100, 200], [300, 50]]
    raw[1] = 150
    raw[2] = 400
    valid = np.array([[True, True], [True, False]])
    out = f.rgb_stretch(raw, valid, p2=[100, 100, 100, 0], p98=[300, 200, 300, 1])
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 127 and out[1, 0, 0] == 255  # linear, clipped
    assert out[0, 0, 1] == 127 and out[0, 0, 2] == 255
    assert tuple(out[1, 1]) == f.COLOURS["ignore"]


def test_error_image_colours() -> None:
    truth = np.array([[1, 0, 1, 0, 255]], np.uint8)
    pred = np.array([[1, 1, 0, 0, 1]], bool)
    out = f.error_image(pred, truth)
    names = ["tp", "fp", "fn", "tn", "ignore"]
    assert [tuple(px) for px in out[0]] == [f.COLOURS[n] for n in names]
    assert len({f.COLOURS[n] for n in names}) == 5


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
    img = _decode(f.fig_confusion(conf), (3.8, 3.4))
    blues = matplotlib.colormaps["Blues"]
    for share in (100 / 102, 2 / 102, 1 / 6, 5 / 6):  # each cell coloured by its row share
        assert _pixels_of(img, tuple(round(255 * v) for v in blues(share)[:3]), 3) > 2000, share
    edges = np.linspace(0, 1, 11)
    pos = [0, 0, 0, 0, 1, 2, 3, 5, 8, 13]
    neg = [20, 13, 8, 5, 3, 2, 1, 0, 0, 0]
    img = _decode(f.fig_probability_histogram(edges, pos, neg, 0.5), (5.2, 3.2))
    assert _pixels_of(img, "#e6550d") > 200  # PV
    assert _pixels_of(img, "#4d4d4d") > 200  # background
    t = np.linspace(0, 1, 11)
    img = _decode(
        f.fig_pr_curve(1 - t, t, chosen=(0.5, 0.5), best=(0.6, 0.6), prevalence=0.1), (4.2, 3.6)
    )
    assert _pixels_of(img, "#3182bd") > 200  # the curve
    assert _pixels_of(img, "#e6550d") > 40  # the best-F1 star
    plain = _decode(f.fig_pr_curve(1 - t, t), (4.2, 3.6))
    assert _pixels_of(plain, "#e6550d") == 0  # no star without a best point
    img = _decode(f.fig_threshold_curves(t, t, t * 0.8, chosen=0.5, best=0.4), (4.8, 3.4))
    assert _pixels_of(img, "#3182bd") > 200 and _pixels_of(img, "#31a354") > 200  # F1, IoU
    assert _pixels_of(img, "#e6550d") > 40  # the best-threshold line
    img = _decode(f.fig_prediction_grid([]), (4, 1))
    assert (img.max(axis=-1) < 80).sum() > 30  # the "no chips" text


def test_prediction_mosaic_layout() -> None:
    chip = f.GridChip(
        "k",
        "s",
        "best 1",
        0.5,
        np.full((10, 8, 3), 7, np.uint8),
        np.ones((10, 8), np.uint8),
        np.full((10, 8), 0.9, np.float32),
        0.5,
    )
    small = f.GridChip(
        "k2",
        "s",
        "worst 1",
        None,
        np.full((4, 4, 3), 7, np.uint8),
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4), np.float32),
        0.5,
    )
    m = f.prediction_mosaic([chip, small], cell=40, gap=2)
    k = 40 // 10
    assert m.shape == (2 * 10 * k + 2, 4 * 10 * k + 3 * 2, 3)
    # errors panel of row 0 is all true positives (white), row 1 all true negatives (dark)
    x_err = 3 * (10 * k + 2) + 10 * k // 2
    assert tuple(m[10 * k // 2, x_err]) == f.COLOURS["tp"]
    assert tuple(m[10 * k + 2 + 10 * k // 2, x_err]) == f.COLOURS["tn"]
    assert f.fig_prediction_grid([chip, small]).startswith(PNG)
    assert f.prediction_mosaic([small], cell=10, gap=2).shape == (12, 4 * 12 + 3 * 2, 3)  # >= cell


def _grid_chip(label: str, key: str, side: int) -> f.GridChip:
    rgb = np.zeros((side, side, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: marks where the panels are
    truth = np.zeros((side, side), np.uint8)
    truth[side // 4 : side // 2, side // 4 : side // 2] = 1
    prob = np.where(truth == 1, 0.9, 0.1).astype(np.float32)
    return f.GridChip(key, "s", label, 0.75, rgb, truth, prob, 0.5)


def _text_line_heights(png: bytes) -> tuple[list[int], int]:
    """Heights (px) of the lines of dark text outside the panels, and the image width."""
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    green = (im[..., 1] > 200) & (im[..., 0] < 60) & (im[..., 2] < 60)
    panel_rows = green.any(axis=1)
    x0 = int(np.flatnonzero(green.any(axis=0))[0])
    ink = im.sum(axis=2) < 3 * 140
    ink[np.ix_(panel_rows, np.arange(x0, im.shape[1]))] = False  # panels are not text
    runs, n = ndimage.label(ink.any(axis=1))
    heights = [int(h) for h in ndimage.sum(np.ones(len(runs)), runs, range(1, n + 1))]
    return [h for h in heights if h >= 3], im.shape[1]


def test_grid_labels_are_readable_at_the_displayed_size() -> None:
    """Chip labels were about 6 px high; at least 11 px as the report shows the figure."""
    for side in (64, 256):
        chips = [_grid_chip("best 1", "test/12", side), _grid_chip("worst 1", "val/3", side)]
        heights, width = _text_line_heights(f.fig_prediction_grid(chips))
        assert len(heights) >= 3, heights  # column titles and one label per chip
        shown = min(1.0, PAGE_WIDTH / width)  # the page scales wider images down
        assert min(heights) * shown >= 11, (side, heights, width)

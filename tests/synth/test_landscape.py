"""Tests of pvdetect.synth.landscape: backgrounds, rendering, and the realism of the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvdetect.data.raster import DEFAULT_NODATA
from pvdetect.synth.landscape import new_landscape, render_window
from pvdetect.synth.populate import corner_cut, populate
from tests.synth.chips import load_chips


@pytest.mark.parametrize("region", ["brazil", "temperate"])
def test_windows_join_without_seams(region: str) -> None:
    """Rendering a window in two halves gives exactly the pixels of rendering it at once."""
    rng = np.random.default_rng(4)
    land = new_landscape(region, rng, 12345)
    populate(land, rng, 0.0, 0.0, 120.0, 90.0, 3, 1500.0)
    land.cuts.append(corner_cut(rng, 0.0, 0.0, 120.0, 90.0, 0.2))
    img, label, valid = render_window(land, 10, 5, 70, 100)
    assert img.dtype == np.float32 and img.shape == (4, 70, 100)
    assert label.any() and not valid.all() and not (label & ~valid).any()
    top = render_window(land, 10, 5, 33, 100)
    bottom = render_window(land, 43, 5, 37, 100)
    left = render_window(land, 10, 5, 70, 41)
    right = render_window(land, 10, 46, 70, 59)
    for whole, a, b, axis in ((img, top[0], bottom[0], 1), (img, left[0], right[0], 2)):
        assert np.concatenate([a, b], axis=axis).tobytes() == whole.tobytes()
    assert np.array_equal(np.concatenate([top[1], bottom[1]]), label)
    assert np.array_equal(np.concatenate([left[2], right[2]], axis=1), valid)
    assert (img[:, ~valid] == DEFAULT_NODATA).all() and (img[:, valid] >= 1).all()


def test_pixel_statistics(moderate: Path) -> None:
    imgs, labs, regions = load_chips(moderate)
    valid = labs != DEFAULT_NODATA
    pv = labs == 1
    frac = pv.sum() / valid.sum()
    assert 0.01 <= frac <= 0.06, frac
    assert (~valid).any(), "no nodata at all"
    per_chip = pv.sum(axis=(1, 2))
    assert (per_chip == 0).any() and (per_chip > 0).sum() >= len(per_chip) // 2
    v = imgs.transpose(1, 0, 2, 3)[:, valid]  # [4, P]
    assert v.min() >= 0 and v.max() <= 10000 and np.percentile(v, 50) > 200
    red, nir = imgs[:, 0], imgs[:, 3]
    ndvi = np.where(valid, (nir - red) / np.maximum(nir + red, 1), 0)
    veg = valid & ~pv & (ndvi > 0.5)
    assert veg.sum() > 0.1 * valid.sum()
    assert np.median(nir[veg]) > 2500 and np.median(red[veg]) < 800
    br = np.array([r == "br" for r in regions])
    te = ~br
    assert br.any() and te.any()
    pv_br, pv_te = pv & br[:, None, None], pv & te[:, None, None]
    assert pv_br.sum() > 100 and pv_te.sum() > 100  # enough PV of both regions to judge
    # Brazilian dry-season PV: grey, red about 1000, NDVI about 0.02-0.10 (REFLECTANCE.md)
    assert 700 < np.median(red[pv_br]) < 1400
    assert -0.05 < np.median(ndvi[pv_br]) < 0.2
    # temperate PV mixes grass between rows: NDVI well above Brazil's, NIR below pasture
    assert 0.2 < np.median(ndvi[pv_te]) < 0.8
    assert np.median(nir[pv_te]) < np.median(nir[valid & te[:, None, None] & ~pv])


def test_nir_threshold_does_not_separate_pv(moderate: Path) -> None:
    """Guard that the data stays hard: no single NIR threshold finds PV (best F1 < 0.6)."""
    imgs, labs, _ = load_chips(moderate)
    valid = labs != DEFAULT_NODATA
    nir = imgs[:, 3][valid].astype(np.float64)
    y = labs[valid] == 1
    best = 0.0
    for score in (nir, -nir):  # PV if NIR below, or above, a threshold
        order = np.argsort(-score, kind="stable")
        tp = np.cumsum(y[order])
        k = np.arange(1, len(order) + 1)
        best = max(best, float((2 * tp / (k + y.sum())).max()))
    assert 0.0 < best < 0.6, best

"""Tests of pvdetect.synth.populate: which objects a window gets, and where."""

from __future__ import annotations

import numpy as np
import pytest

from pvdetect.synth.landscape import Landscape
from pvdetect.synth.populate import corner_cut, mean_plant_area, populate
from pvdetect.synth.shapes import Blob, Pivot, Plant, Rect, Road


def _populated(region: str, seed: int, n_plants: int = 6) -> Landscape:
    land = Landscape(region=region, key=1)
    populate(land, np.random.default_rng(seed), 100.0, 200.0, 512.0, 512.0, n_plants, 4000.0)
    return land


def _stripes(land: Landscape) -> int:
    return sum(isinstance(o, Rect) and o.stripes > 0 for o in land.objects)


def test_region_specific_families_and_shared_look_alikes() -> None:
    br, te = _populated("brazil", 1), _populated("temperate", 1)
    assert any(isinstance(o, Pivot) for o in br.objects)
    assert not any(isinstance(o, Pivot) for o in te.objects)
    assert _stripes(te) > 0 and _stripes(br) == 0  # greenhouses and vineyards: temperate only
    for land in (br, te):
        kinds = {type(o) for o in land.objects}
        assert {Rect, Blob, Road} <= kinds
        assert all(isinstance(s, Blob) and s.shade > 0 for s in land.shadows)
        assert len(land.plants) == 6 and all(isinstance(p, Plant) for p in land.plants)
        for p in land.plants:  # centred inside the window, area within the limits
            assert 100.0 <= p.cx <= 612.0 and 200.0 <= p.cy <= 712.0
            assert 100.0 * 0.99 <= p.area <= 4000.0 * 1.01


def test_same_stream_same_objects() -> None:
    a, b, c = _populated("brazil", 2), _populated("brazil", 2), _populated("brazil", 3)
    assert repr(a.objects) == repr(b.objects) and repr(a.plants) == repr(b.plants)
    assert repr(a.objects) != repr(c.objects)


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_corner_cut_takes_about_its_share(share: float) -> None:
    rng = np.random.default_rng(0)
    yc, xc = np.mgrid[0:200, 0:300] + 0.5
    for _ in range(4):
        a, b, c = corner_cut(rng, 0.0, 0.0, 300.0, 200.0, share)
        cut = (a * xc + b * yc > c).mean()
        assert share * 0.5 < cut < share * 1.5


def test_mean_plant_area_is_the_mean_of_the_drawn_areas() -> None:
    land = _populated("temperate", 5, n_plants=4000)
    areas = np.array([p.area for p in land.plants])
    assert abs(areas.mean() / mean_plant_area(4000.0) - 1.0) < 0.03

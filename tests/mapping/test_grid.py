"""The map's tile grid: stable names, exact ownership across zones and the equator."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import box

from pvdetect.errors import ConfigError
from pvdetect.inference.plants import equal_area_crs
from pvdetect.mapping.grid import Tile, plan_tiles, to_crs


def test_tile_names_and_grid() -> None:
    t = Tile(22, True, 641, 1180, 20000.0, 10.0, 64)
    assert t.id == "22S_0641_1180" and t.epsg == 32722 and t.cell_px == 2000
    assert t.cell_bounds == (12_820_000.0, 10_000_000.0 - 1181 * 20000, 12_840_000.0,
                             10_000_000.0 - 1180 * 20000)  # fmt: skip
    assert t.size_px == 2128 and t.transform.c == 12_820_000.0 - 640.0
    n = Tile(33, False, 20, 0, 20000.0, 10.0, 0)
    assert n.cell_bounds == (400_000.0, 0.0, 420_000.0, 20_000.0) and n.epsg == 32633


def _owned_ll(tiles: list[Tile]) -> np.ndarray:
    out = []
    for t in tiles:
        tr = pyproj.Transformer.from_crs(t.epsg, 4326, always_xy=True)
        out.append(to_crs(shapely.segmentize(t.owned, 50.0), tr))
    return np.array(out, dtype=object)


def test_tiles_own_the_area_once_across_a_meridian_and_the_equator() -> None:
    bbox = box(-48.06, -0.03, -47.95, 0.02)  # zones 22/23, both hemispheres
    tiles = plan_tiles(bbox, 2.0, 10.0, 16, aoi=bbox)
    assert {t.id[:3] for t in tiles} == {"22N", "22S", "23N", "23S"}
    assert tiles == plan_tiles(bbox, 2.0, 10.0, 16, aoi=bbox)  # stable
    owned = _owned_ll(tiles)
    ea = pyproj.Transformer.from_crs(4326, equal_area_crs("EPSG:4326", bbox.bounds),
                                     always_xy=True)  # fmt: skip
    areas = shapely.area(to_crs(owned, ea))
    union = shapely.area(to_crs(shapely.union_all(owned), ea))
    want = shapely.area(to_crs(shapely.segmentize(bbox, 1e-3), ea))
    assert areas.sum() == pytest.approx(want, rel=1e-6)  # no overlap ...
    assert union == pytest.approx(want, rel=1e-6)  # ... and no gap
    # tiles away from the meridian and the box's outline own their whole cell
    whole = [t for t in tiles if t.whole_cell]
    assert whole and all(t.owned.equals(box(*t.cell_bounds)) for t in whole)
    # a smaller area has a subset of the tiles, with the same cells
    sub = plan_tiles(box(-48.0, -0.01, -47.97, 0.0), 2.0, 10.0, 16)
    ids = {t.id: t for t in tiles}
    assert sub and all(t.id in ids and t.cell_bounds == ids[t.id].cell_bounds for t in sub)


def test_bad_grids() -> None:
    with pytest.raises(ConfigError, match="whole number"):
        plan_tiles(box(10, 10, 10.1, 10.1), 1.005, 10.0, 0)
    with pytest.raises(ConfigError, match="beyond UTM"):
        plan_tiles(box(10, 84.1, 10.1, 84.2), 1.28, 10.0, 0)

"""Tests of pvdetect.inference.aoi: reading areas of interest, pixel masks, tiles, clipping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from pvdetect.errors import DataError
from pvdetect.inference.aoi import clip_plants, inside_mask, read_aoi, tiles_touching
from pvdetect.inference.plants import AreaCalculator, Plant

UTM = "EPSG:32633"
T = Affine(10, 0, 500000, 0, -10, 5300000)


def _gpkg(path: Path, geoms: list, crs: str, layer: str = "aoi") -> Path:
    wkb = np.array(shapely.to_wkb(np.array(geoms, dtype=object)), dtype=object)
    pyogrio.raw.write(
        str(path), wkb, [np.arange(len(geoms))], ["n"], layer=layer, driver="GPKG",
        geometry_type="Unknown", crs=crs, append=path.exists(),
    )  # fmt: skip
    return path


def test_read_geopackage_in_another_crs(tmp_path: Path) -> None:
    """Every polygon of every layer, in the first layer's CRS; lines and points are ignored."""
    to_3857 = pyproj.Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
    a = shapely.transform(
        box(500000, 5299000, 501000, 5300000),
        lambda xy: np.column_stack(to_3857.transform(xy[:, 0], xy[:, 1])),
    )
    f = _gpkg(tmp_path / "a.gpkg", [a, shapely.Point(0, 0)], "EPSG:3857")
    _gpkg(f, [box(501000, 5299000, 502000, 5300000)], UTM, layer="more")
    aoi = read_aoi(f)
    assert aoi.crs.to_epsg() == 3857
    in_utm = aoi.in_crs(UTM)
    assert in_utm.area == pytest.approx(2e6, rel=1e-3)
    assert in_utm.bounds == pytest.approx((500000, 5299000, 502000, 5300000), abs=1.0)


def test_geojson_without_crs_is_lon_lat(tmp_path: Path) -> None:
    f = tmp_path / "a.geojson"
    f.write_text(json.dumps({"type": "Polygon", "coordinates": [[[15, 47], [15.1, 47],
                             [15.1, 47.1], [15, 47]]]}))  # fmt: skip
    assert read_aoi(f).crs.to_epsg() == 4326


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not found"), ("not json", "not a readable vector file"),
     ('{"type": "Point", "coordinates": [15, 47]}', "holds no polygons")],
)  # fmt: skip
def test_bad_aoi_files(tmp_path: Path, content: str | None, match: str) -> None:
    f = tmp_path / "a.geojson"
    if content is not None:
        f.write_text(content)
    with pytest.raises(DataError, match=f"a.geojson: .*{match}"):
        read_aoi(f)


def test_inside_mask_and_touching_tiles() -> None:
    geom = box(500000, 5300000 - 153, 500000 + 253, 5300000)  # 25.3 x 15.3 pixels
    m = inside_mask(geom, T, 10, 10, 40)  # rows 10..19
    assert m.shape == (10, 40)
    assert m[:5, :25].all() and not m[5:].any() and not m[:, 25:].any()  # pixel centres
    active = tiles_touching(geom, T, [0, 16, 32], [0, 16, 32], 16, (48, 48))
    assert active == ((0, 1), (), ())


def test_clip_plants() -> None:
    areas = AreaCalculator(UTM, T, 100, 100)
    aoi = box(500000, 5299500, 500500, 5300000)
    inside = Plant(1, box(500100, 5299800, 500200, 5299900), 10000.0, 0.8, 0.9)
    crossing = Plant(2, box(500400, 5299800, 500600, 5299900), 20000.0, 0.7, 0.95)
    outside = Plant(3, box(500700, 5299800, 500800, 5299900), 10000.0, 0.6, 0.9)
    u = box(500450, 5299600, 500550, 5299700).union(box(500450, 5299400, 500550, 5299450))
    two = Plant(4, u.union(box(500540, 5299400, 500550, 5299700)), 0.0, 0.5, 0.6)
    got = clip_plants([inside, crossing, outside, two], aoi, areas)
    assert [p.id for p in got] == [1, 2, 3]
    assert got[0].geometry.equals(inside.geometry) and got[0].area_m2 == 10000.0
    assert got[1].geometry.bounds == (500400, 5299800, 500500, 5299900)
    assert got[1].area_m2 == pytest.approx(10000 / 0.9996**2, rel=1e-3)
    assert got[1].mean_prob == 0.7
    assert got[2].geometry.bounds == (500450, 5299600, 500500, 5299700)
    assert clip_plants([crossing], aoi, areas, min_area_m2=20000) == []

"""Tests of pvdetect.inference.vectorize: seam merging, equal-area areas, holes, filters,
vector output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from pvdetect.inference.plants import Plant, equal_area_crs, write_plants
from pvdetect.inference.vectorize import PlantBuilder, polygon_prob_stats, vectorize_mask
from tests.fixtures import write_scene

UTM = "EPSG:32633"
# 10 m pixels near the central meridian of UTM 33N (scale factor 0.9996 there)
T_UTM = Affine(10, 0, 500000, 0, -10, 5300000)
UTM_SCALE = 0.9996


def _mask(tmp: Path, m: np.ndarray, crs: str = UTM, transform: Affine = T_UTM) -> Path:
    """``tmp/mask.tif`` as predict writes it: uint8, nodata 255."""
    return write_scene(
        tmp / "mask.tif", m.astype(np.uint8), crs=crs, transform=transform, nodata=255
    )


def _prob(tmp: Path, p: np.ndarray, crs: str = UTM, transform: Affine = T_UTM) -> Path:
    """``tmp/prob.tif`` as predict writes it: float32, nodata -9999."""
    return write_scene(
        tmp / "prob.tif", p.astype(np.float32), crs=crs, transform=transform, nodata=-9999
    )


def test_square_across_strip_borders_is_one_polygon_of_9_ha(tmp_path: Path) -> None:
    m = np.zeros((100, 80), np.uint8)
    m[10:40, 20:50] = 1  # 30 x 30 px at 10 m, crossing strip borders at rows 16 and 32
    plants = vectorize_mask(_mask(tmp_path, m), strip_rows=16)
    assert len(plants) == 1
    p = plants[0]
    assert p.id == 1
    expected = box(500200, 5300000 - 400, 500500, 5300000 - 100)
    assert p.geometry.equals(expected)
    assert len(p.geometry.exterior.coords) == 5  # seam vertices removed
    # true area: the grid area divided by the squared UTM scale factor
    assert p.area_m2 == pytest.approx(90000 / UTM_SCALE**2, rel=2e-4)
    assert p.area_ha == pytest.approx(9.0, rel=2e-3)


def test_u_shape_split_into_pieces_merges(tmp_path: Path) -> None:
    m = np.zeros((60, 60), np.uint8)
    m[5:12, 5:50] = 1  # top bar in strip 0
    m[5:40, 5:12] = 1  # left leg crossing strips
    m[5:40, 40:50] = 1  # right leg crossing strips (separate from the left in lower strips)
    plants = vectorize_mask(_mask(tmp_path, m), strip_rows=10, min_area_m2=0)
    assert len(plants) == 1
    assert plants[0].area_m2 * UTM_SCALE**2 / 100 == pytest.approx(float(m.sum()), rel=2e-4)


def test_corner_touching_and_separate_plants_stay_apart(tmp_path: Path) -> None:
    m = np.zeros((40, 40), np.uint8)
    m[5:10, 5:10] = 1
    m[10:15, 10:15] = 1  # touches the first only at a corner, across a strip border
    m[5:15, 30:35] = 1  # a third plant crossing the same border
    plants = vectorize_mask(_mask(tmp_path, m), strip_rows=10, min_area_m2=0)
    assert len(plants) == 3
    assert sorted(round(p.area_m2 / 100 * UTM_SCALE**2) for p in plants) == [25, 25, 50]
    assert [p.id for p in plants] == [1, 2, 3]


def test_nodata_pixels_are_not_plants(tmp_path: Path) -> None:
    m = np.full((30, 30), 255, np.uint8)
    m[20:30, 20:30] = 0
    assert vectorize_mask(_mask(tmp_path, m), min_area_m2=0) == []


def test_area_in_geographic_crs_matches_geodesic_area(tmp_path: Path) -> None:
    res = 0.0001  # degrees, about 11 m x 7.9 m at 45 N
    t = Affine(res, 0, 15.0, 0, -res, 45.01)
    m = np.zeros((80, 90), np.uint8)
    m[10:70, 5:85] = 1
    plants = vectorize_mask(_mask(tmp_path, m, "EPSG:4326", t), strip_rows=7, min_area_m2=0)
    assert len(plants) == 1
    lon0, lat1 = 15.0 + 5 * res, 45.01 - 10 * res
    lon1, lat0 = 15.0 + 85 * res, 45.01 - 70 * res
    geod = pyproj.Geod(ellps="WGS84")
    true_area, _ = geod.geometry_area_perimeter(box(lon0, lat0, lon1, lat1))
    assert plants[0].area_m2 == pytest.approx(abs(true_area), rel=1e-4)
    assert plants[0].geometry.equals(box(lon0, lat0, lon1, lat1))


def test_equal_area_crs_is_centred_laea() -> None:
    crs = equal_area_crs(UTM, (500000, 5290000, 510000, 5300000))
    op = crs.coordinate_operation
    assert op.method_name == "Lambert Azimuthal Equal Area"
    params = {q.name: q.value for q in op.params}
    assert params["Longitude of natural origin"] == pytest.approx(15.066, abs=0.01)
    assert params["Latitude of natural origin"] == pytest.approx(47.80, abs=0.05)


def test_holes_filled_below_limit_and_kept_above(tmp_path: Path) -> None:
    m = np.zeros((80, 80), np.uint8)
    m[5:75, 5:75] = 1
    m[10:14, 10:14] = 0  # 16 px = 1600 m2 hole
    m[30:50, 30:50] = 0  # 400 px = 4 ha hole
    path = _mask(tmp_path, m)
    (p,) = vectorize_mask(path, max_hole_m2=10000)
    assert len(p.geometry.interiors) == 1
    assert p.area_m2 * UTM_SCALE**2 == pytest.approx((70 * 70 - 400) * 100, rel=1e-6)
    (kept,) = vectorize_mask(path, max_hole_m2=0)
    assert len(kept.geometry.interiors) == 2
    (filled,) = vectorize_mask(path, max_hole_m2=float("inf"))
    assert not filled.geometry.interiors
    assert filled.area_m2 * UTM_SCALE**2 == pytest.approx(70 * 70 * 100, rel=1e-6)


def test_min_area_filter_and_prob_stats(tmp_path: Path) -> None:
    m = np.zeros((50, 50), np.uint8)
    p = np.full((50, 50), 0.1, np.float32)
    m[5:15, 5:15] = 1  # 1 ha
    p[5:15, 5:15] = 0.7
    p[6, 6] = 0.99
    m[30:33, 30:33] = 1  # 900 m2
    p[30:33, 30:33] = 0.6
    mp, pp = _mask(tmp_path, m), _prob(tmp_path, p)
    big = vectorize_mask(mp, pp, min_area_m2=1000)
    assert len(big) == 1
    assert big[0].mean_prob == pytest.approx((99 * 0.7 + 0.99) / 100, rel=1e-5)
    assert big[0].max_prob == pytest.approx(0.99, rel=1e-6)
    both = vectorize_mask(mp, pp, min_area_m2=800)
    assert len(both) == 2
    assert both[1].mean_prob == pytest.approx(0.6, rel=1e-6)
    none = vectorize_mask(mp, pp, min_area_m2=20000)
    assert none == []
    nostats = vectorize_mask(mp, None, min_area_m2=0)
    assert np.isnan(nostats[0].mean_prob)


def test_prob_stats_match_a_per_polygon_computation(tmp_path: Path) -> None:
    import rasterio.features

    rng = np.random.default_rng(3)
    p = rng.random((90, 70)).astype(np.float32)
    p[40:45, :] = -9999  # nodata rows, inside some polygons
    p[0:3, 0:3] = -9999  # a polygon with nothing valid
    polys = [
        box(2, 2, 20, 30),  # crosses the strip border at row 16
        box(30, 10, 60, 80).difference(box(40, 20, 50, 30)),  # a holed plant
        box(42, 22, 47, 27),  # nested: inside the first one's (filled) outer ring
        box(0, 0, 3, 3),
        box(10.3, 60.2, 25.7, 85.9),  # fractional bounds: pixel centres decide
    ]
    polys.append(box(30, 10, 60, 80))  # overlaps the holed one (filled version): nested too
    path = _prob(tmp_path, p)
    means, maxes = polygon_prob_stats(path, polys, strip_rows=16)
    for i, poly in enumerate(polys):
        inside = rasterio.features.geometry_mask(
            [poly], out_shape=p.shape, transform=Affine.identity(), invert=True
        )
        vals = p[inside & (p != -9999)].astype(np.float64)
        if vals.size == 0:
            assert np.isnan(means[i]) and np.isnan(maxes[i])
        else:
            assert means[i] == pytest.approx(vals.mean(), rel=1e-9)
            assert maxes[i] == pytest.approx(vals.max(), rel=1e-7)
    empty = polygon_prob_stats(path, [])
    assert empty[0].shape == (0,)


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Random plants: rectangles, some holed, some touching, one nested in another's hole."""
    m = np.zeros(shape, np.uint8)
    for _ in range(25):
        y, x = rng.integers(0, shape[0] - 12), rng.integers(0, shape[1] - 12)
        h, w = rng.integers(2, 12, size=2)
        m[y : y + h, x : x + w] = 1
    m[40:70, 10:40] = 1
    m[45:65, 15:35] = 0  # a 4 ha hole: kept
    m[50:55, 20:25] = 1  # a plant inside it
    m[:, -1] = 255  # nodata column
    return m


@pytest.mark.parametrize(
    ("strips", "max_hole"),
    [([7], 30000), ([16, 5, 30], 30000), ([1], 30000), ([9, 4], 50000)],
)
def test_plant_builder_strips_match_vectorize_mask(
    tmp_path: Path, strips: list[int], max_hole: float
) -> None:
    """Rows given strip by strip, with probabilities, give the same plants as the whole mask.

    With ``max_hole`` 50000 the 4 ha hole is filled and the plant inside it is nested.
    """
    rng = np.random.default_rng(5)
    m = _blobs(rng, (97, 83))
    p = rng.random(m.shape).astype(np.float32)
    p[m == 255] = -9999
    mp, pp = _mask(tmp_path, m), _prob(tmp_path, p)
    ref = vectorize_mask(mp, pp, min_area_m2=500, max_hole_m2=max_hole)
    assert len(ref) >= 8
    b = PlantBuilder(UTM, T_UTM, 83, 97, min_area_m2=500, max_hole_m2=max_hole)
    row, k = 0, 0
    while row < 97:
        n = min(strips[k % len(strips)], 97 - row)
        b.add_rows(row, m[row : row + n], p[row : row + n], -9999)
        row, k = row + n, k + 1
    got = b.finish(pp)
    assert [g.id for g in got] == [r.id for r in ref]
    for g, r in zip(got, ref, strict=True):
        assert g.geometry.equals(r.geometry)
        assert g.area_m2 == pytest.approx(r.area_m2, rel=1e-9)
        assert g.mean_prob == pytest.approx(r.mean_prob, rel=1e-9)
        assert g.max_prob == pytest.approx(r.max_prob, rel=1e-9)


def test_plant_builder_checks_row_order() -> None:
    b = PlantBuilder(UTM, T_UTM, 10, 20)
    b.add_rows(0, np.zeros((5, 10), np.uint8))
    with pytest.raises(ValueError, match="expected row 5"):
        b.add_rows(6, np.zeros((5, 10), np.uint8))
    with pytest.raises(ValueError, match="width"):
        b.add_rows(5, np.zeros((5, 9), np.uint8))
    with pytest.raises(ValueError, match="never given"):
        b.finish()


def test_write_plants_gpkg_and_geojson(tmp_path: Path) -> None:
    m = np.zeros((40, 40), np.uint8)
    m[5:20, 5:20] = 1
    m[25:35, 25:38] = 1
    plants = vectorize_mask(_mask(tmp_path, m), min_area_m2=0)
    gpkg = write_plants(tmp_path / "p.gpkg", plants, UTM)
    info = pyogrio.read_info(gpkg)
    assert info["features"] == 2
    assert pyproj.CRS.from_user_input(info["crs"]).to_epsg() == 32633
    assert list(info["fields"]) == ["id", "area_m2", "area_ha", "mean_prob", "max_prob"]
    _, _, geoms, fields = pyogrio.raw.read(gpkg)
    got = shapely.from_wkb(geoms)
    assert got[0].equals(plants[0].geometry)
    assert fields[2][0] == pytest.approx(plants[0].area_ha, abs=1e-4)

    gj = write_plants(tmp_path / "p.geojson", plants, UTM, driver="GeoJSON", to_wgs84=True)
    doc = json.loads(gj.read_text())
    assert len(doc["features"]) == 2
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 14.9 < lon < 15.1 and 47.7 < lat < 47.9
    assert doc["features"][0]["properties"]["id"] == 1


def test_write_empty_plants(tmp_path: Path) -> None:
    out = write_plants(tmp_path / "e.gpkg", [], UTM)
    assert pyogrio.read_info(out)["features"] == 0
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_plant_area_ha() -> None:
    p = Plant(1, box(0, 0, 1, 1), 25000.0, 0.5, 0.9)
    assert p.area_ha == 2.5

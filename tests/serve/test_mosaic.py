"""Tests of pvdetect.serve.mosaic: the area cut from local scenes (grids, mosaics, polygons)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely.geometry
from pyproj import Transformer

from pvdetect.errors import ConfigError
from pvdetect.serve.mosaic import area_grid, build_mosaic, covering
from pvdetect.serve.sources import ScenesSource, footprint_of

from .helpers import SCENE_X0, SCENE_Y0, UTM33, write_scene

TO_WGS = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)


def _lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_WGS.transform(x, y)
    return float(lon), float(lat)


def _bbox(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    (w, s), (e, n) = _lonlat(x0, y0), _lonlat(x1, y1)
    return (w, s, e, n)


def _offset(grid) -> tuple[int, int]:
    """Column and row of the grid's corner on the scene's pixels."""
    c = (grid.transform.c - SCENE_X0) / 10
    r = (SCENE_Y0 - grid.transform.f) / 10
    assert c == round(c) and r == round(r)  # aligned on the scene's pixels
    return round(c), round(r)


@pytest.fixture
def two_scenes(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``a.tif`` and ``b.tif``: 50 x 50 px side by side (b to the east), with known values."""
    a = np.arange(4 * 50 * 50, dtype=np.float32).reshape(4, 50, 50)
    b = a + 100_000
    write_scene(tmp_path / "a.tif", a)
    write_scene(tmp_path / "b.tif", b, x0=SCENE_X0 + 500)
    return tmp_path, a, b


def test_area_across_two_scenes(two_scenes, tmp_path: Path) -> None:
    root, a, b = two_scenes
    footprints, skipped = ScenesSource(root).footprints()
    assert [f.path.name for f in footprints] == ["a.tif", "b.tif"] and skipped == []
    # scene columns 30..70 of the pair, rows 10..30: 20 px from each scene
    bbox = _bbox(SCENE_X0 + 300, SCENE_Y0 - 300, SCENE_X0 + 700, SCENE_Y0 - 100)
    hits = covering(footprints, bbox)
    assert {h.path.name for h in hits} == {"a.tif", "b.tif"}
    grid = area_grid(hits[0], bbox)
    c0, r0 = _offset(grid)
    # the WGS 84 box, projected, bulges a little: at most a pixel more on each side
    assert 29 <= c0 <= 30 and 9 <= r0 <= 10
    assert 70 <= c0 + grid.width <= 71 and 30 <= r0 + grid.height <= 31
    result = build_mosaic(hits, grid, tmp_path / "out.tif")
    with rasterio.open(result.path) as ds:
        out = ds.read()
        assert ds.descriptions == ("Red", "Green", "Blue", "NIR")
        assert ds.nodata == -9999.0
    pair = np.concatenate([a, b], axis=2)
    np.testing.assert_array_equal(out, pair[:, r0 : r0 + grid.height, c0 : c0 + grid.width])


def test_point_area_is_laid_out_around_the_projected_centre(two_scenes) -> None:
    root, _, _ = two_scenes
    ref = footprint_of(root / "a.tif")
    lon, lat = _lonlat(SCENE_X0 + 250, SCENE_Y0 - 250)
    grid = area_grid(ref, (lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01), (lon, lat, 200, 100))
    assert (grid.width, grid.height) == (20, 10)
    assert grid.transform.c == pytest.approx(SCENE_X0 + 150)
    assert grid.transform.f == pytest.approx(SCENE_Y0 - 200)
    with pytest.raises(ConfigError, match="area: .* pixels, more than"):
        area_grid(ref, (14.0, 46.0, 16.0, 48.5))


def test_scene_in_another_crs_fills_the_gaps(tmp_path: Path) -> None:
    """A hole in the reference scene is filled from a scene in EPSG:3035 (warped)."""
    a = np.full((4, 50, 50), 1000.0, np.float32)
    a[:, 20:30, 20:30] = -9999.0
    write_scene(tmp_path / "a.tif", a)
    tr = Transformer.from_crs(UTM33, "EPSG:3035", always_xy=True)
    x, y = tr.transform(SCENE_X0 - 200, SCENE_Y0 + 200)
    write_scene(tmp_path / "z.tif", np.full((4, 80, 80), 2000.0, np.float32), x, y, "EPSG:3035")
    footprints, _ = ScenesSource(tmp_path).footprints()
    bbox = _bbox(SCENE_X0 + 100, SCENE_Y0 - 400, SCENE_X0 + 400, SCENE_Y0 - 100)
    hits = covering(footprints, bbox)
    assert hits[0].path.name == "a.tif"  # a covers the area; z only partly
    grid = area_grid(hits[0], bbox)
    c0, r0 = _offset(grid)
    result = build_mosaic(hits, grid, tmp_path / "out.tif")
    with rasterio.open(result.path) as ds:
        out = ds.read(1)
        assert ds.crs.to_epsg() == 32633
    hole = out[20 - r0 : 30 - r0, 20 - c0 : 30 - c0]
    assert (hole == 2000.0).all()  # from z
    assert (out == 1000.0).sum() == out.size - 100
    assert result.scenes == [tmp_path / "a.tif", tmp_path / "z.tif"]


def test_polygon_outside_is_nodata(two_scenes, tmp_path: Path) -> None:
    root, a, _ = two_scenes
    ref = footprint_of(root / "a.tif")
    corners = [(0, 0), (40, 0), (0, 40)]  # a triangle on scene pixel corners (col, row)
    ring = [_lonlat(SCENE_X0 + c * 10, SCENE_Y0 - r * 10) for c, r in corners]
    polygon = shapely.geometry.Polygon(ring)
    grid = area_grid(ref, polygon.bounds)
    c0, r0 = _offset(grid)
    assert -1 <= c0 <= 0 and -1 <= r0 <= 0 and grid.width <= 42 and grid.height <= 42
    result = build_mosaic([ref], grid, tmp_path / "tri.tif", polygon=polygon)
    with rasterio.open(result.path) as ds:
        out = ds.read(4)[-r0 : 40 - r0, -c0 : 40 - c0]  # scene rows and columns 0..40
    rows, cols = np.mgrid[0:40, 0:40]
    inside = rows + cols + 1 < 39  # pixel centres well inside the triangle
    outside = rows + cols + 1 > 41
    np.testing.assert_array_equal(out[inside], a[3, :40, :40][inside])
    assert (out[outside] == -9999.0).all()
    assert inside.sum() > 600 and outside.sum() > 600


def test_scenes_with_other_band_counts_are_skipped(two_scenes, tmp_path: Path) -> None:
    root, _, _ = two_scenes
    write_scene(root / "c.tif", np.ones((3, 50, 50), np.float32), x0=SCENE_X0 + 250)
    footprints, _ = ScenesSource(root).footprints()
    bbox = _bbox(SCENE_X0 + 300, SCENE_Y0 - 300, SCENE_X0 + 700, SCENE_Y0 - 100)
    hits = covering(footprints, bbox)
    grid = area_grid(footprint_of(root / "a.tif"), bbox)
    result = build_mosaic([footprint_of(root / "a.tif"), *hits], grid, tmp_path / "o.tif")
    assert any("c.tif: 3 bands, not 4" in w for w in result.warnings)
    assert root / "c.tif" not in result.scenes


def test_unusable_files_are_reported_not_fatal(tmp_path: Path) -> None:
    write_scene(tmp_path / "good.tif", np.ones((4, 20, 20), np.float32))
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    footprints, skipped = ScenesSource(tmp_path).footprints()
    assert [f.path.name for f in footprints] == ["good.tif"]
    assert len(skipped) == 1 and "broken.tif" in skipped[0]

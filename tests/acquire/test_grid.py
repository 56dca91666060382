"""Area parsing, UTM choice and the pixel-aligned output grid."""

from __future__ import annotations

import pytest
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from pvdetect.acquire.grid import (
    MAX_PIXELS,
    grid_for_bbox,
    grid_for_point,
    parse_bbox,
    parse_crs,
    parse_point,
    utm_crs,
)
from pvdetect.errors import ConfigError


def test_parse_bbox_and_point() -> None:
    assert parse_bbox("-48.1, -15.9,-47.8,-15.7") == (-48.1, -15.9, -47.8, -15.7)
    assert parse_point("-47.9,-15.8") == (-47.9, -15.8)
    for text, msg in [
        ("-48,-15,-47", "expected W,S,E,N"),
        ("a,b,c,d", "numbers"),
        ("-47,-15,-48,-14", "west -47 must be below east -48"),
        ("-48,-14,-47,-15", "south -14 must be below north -15"),
        ("-48,-95,-47,-14", "latitudes"),
        ("-190,-15,-47,-14", "longitudes"),
        ("nan,-15,-47,-14", "finite"),
    ]:
        with pytest.raises(ConfigError, match=msg) as exc:
            parse_bbox(text)
        assert str(exc.value).startswith("--bbox: ")
    with pytest.raises(ConfigError, match="--point: latitude 95"):
        parse_point("10,95")
    with pytest.raises(ConfigError, match="--point: expected LON,LAT"):
        parse_point("10")


def test_utm_zone_of_the_centre() -> None:
    assert utm_crs(-47.9, -15.8) == CRS.from_epsg(32723)
    assert utm_crs(16.4, 48.2) == CRS.from_epsg(32633)
    assert utm_crs(-180.0, 10.0) == CRS.from_epsg(32601)
    assert utm_crs(180.0, -10.0) == CRS.from_epsg(32760)


def test_parse_crs_wants_a_projected_crs() -> None:
    assert parse_crs("EPSG:32723").to_epsg() == 32723
    with pytest.raises(ConfigError, match="--crs: EPSG:4326 is not projected"):
        parse_crs("EPSG:4326")
    with pytest.raises(ConfigError, match="--crs: not a CRS"):
        parse_crs("EPSG:99999999")


def test_bbox_grid_is_aligned_and_covers_the_bbox() -> None:
    bbox = (-47.93, -15.83, -47.88, -15.79)
    grid = grid_for_bbox(bbox, CRS.from_epsg(32723), 10.0)
    left, bottom, right, top = grid.bounds
    assert left % 10 == 0 and top % 10 == 0 and grid.res == 10
    xs, ys = warp_transform("EPSG:4326", grid.crs, [bbox[0], bbox[2]], [bbox[1], bbox[3]])
    assert left <= min(xs) and right >= max(xs) and bottom <= min(ys) and top >= max(ys)
    assert right - max(xs) < 10 + 60 and min(xs) - left < 10 + 60  # no more than needed
    w, s, e, n = grid.bbox_wgs84()
    assert w <= bbox[0] and s <= bbox[1] and e >= bbox[2] and n >= bbox[3]
    doc = grid.to_json()
    assert doc["crs"] == "EPSG:32723" and doc["width"] == grid.width
    assert doc["transform"] == [10.0, 0.0, left, 0.0, -10.0, top]


def test_point_grid_is_a_centred_square() -> None:
    grid = grid_for_point(-47.9, -15.8, 5120.0, CRS.from_epsg(32723), 10.0)
    assert grid.width == grid.height == 512
    row, col = grid.rowcol(-47.9, -15.8)
    assert 255 <= row <= 257 and 255 <= col <= 257
    assert grid.transform.c % 10 == 0 and grid.transform.f % 10 == 0
    odd = grid_for_point(-47.9, -15.8, 405.0, CRS.from_epsg(32723), 10.0)
    assert odd.width == 41


def test_too_large_or_empty_areas_are_refused() -> None:
    with pytest.raises(ConfigError, match=f"more than the {MAX_PIXELS:,}"):
        grid_for_bbox((-60.0, -20.0, -40.0, -5.0), CRS.from_epsg(32723), 10.0)
    with pytest.raises(ConfigError, match="--resolution"):
        grid_for_bbox((-47.9, -15.8, -47.8, -15.7), CRS.from_epsg(32723), 0.0)
    with pytest.raises(ConfigError, match="--size-km"):
        grid_for_point(-47.9, -15.8, 0.0, CRS.from_epsg(32723), 10.0)

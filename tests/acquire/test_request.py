"""The acquisition request: options checked together, the area, what a rerun compares."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from rasterio.crs import CRS

from pvdetect.acquire.catalogs import Catalog
from pvdetect.acquire.request import AcquireRequest
from pvdetect.errors import ConfigError

BASE = AcquireRequest(
    catalog=Catalog("url", "https://stac.example.org/v1"),
    collection="S2",
    bbox=None,
    point=(-47.9, -15.8),
    size_km=1.0,
    start=date(2023, 6, 1),
    end=date(2023, 8, 31),
    name="plant",
)


def test_checks_name_the_option() -> None:
    cases = [
        ({"bbox": (-48.0, -16.0, -47.0, -15.0)}, "--bbox or --point: give exactly one"),
        ({"start": date(2023, 9, 1)}, "--start: 2023-09-01 is after --end"),
        ({"name": "../x"}, "--name: '../x' must start"),
        ({"name": "a/b"}, "--name: 'a/b'"),
        ({"max_items": 0}, "--max-items"),
        ({"size_km": None}, "--size-km: needed with --point"),
        ({"chips": 3, "chip_size": 8}, "--chip-size: must lie in [16, 4096]"),
        ({"chips": 3, "point": None, "bbox": (-48.0, -16.0, -47.0, -15.0)}, "--chips: needs"),
    ]
    for change, msg in cases:
        with pytest.raises(ConfigError) as exc:
            replace(BASE, **change)
        assert msg in str(exc.value), (change, exc.value)


def test_chips_widen_the_area_to_two_chips() -> None:
    assert BASE.area_m() == 1000.0
    chips = replace(BASE, chips=4, size_km=None)
    assert chips.area_m() == 2 * 256 * 10.0
    assert replace(chips, size_km=8.0).area_m() == 8000.0
    grid = chips.grid()
    assert (grid.width, grid.height) == (512, 512) and grid.crs == CRS.from_epsg(32723)


def test_the_recorded_request() -> None:
    doc = BASE.to_json()
    assert doc["crs"] == "EPSG:32723" and doc["point"] == [-47.9, -15.8]
    assert doc["size_km"] == 1.0 and doc["chip_size"] is None and doc["seed"] is None
    assert doc["mask_classes"] == [0, 1, 3, 8, 9, 10, 11]
    # what decides the output changes the record; the seed only counts with chips
    assert replace(BASE, seed=5).to_json() == doc
    assert replace(BASE, resolution=20.0).to_json() != doc
    assert replace(BASE, crs=CRS.from_epsg(32722)).to_json()["crs"] == "EPSG:32722"
    assert replace(BASE, chips=2, seed=1).to_json() != replace(BASE, chips=2, seed=2).to_json()

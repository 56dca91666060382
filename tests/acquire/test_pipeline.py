"""End-to-end acquisitions against the live test STAC API: composite, sidecar, reuse, chips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from pvdetect.cli import main

from .conftest import CRS_UTM, SIZE, X0, Y0, Scene, collection_doc, expected_median, make_items
from .stac_server import TestServer


def _window_bbox(col0: int, row0: int, cols: int, rows: int) -> str:
    """A WGS 84 bbox strictly inside a window of the scene's pixels (a little margin)."""
    left, top = X0 + col0 * 10 + 15, Y0 - row0 * 10 - 15
    right, bottom = left + cols * 10 - 30, top - rows * 10 + 30
    lons, lats = warp_transform(CRS_UTM, "EPSG:4326", [left, right], [bottom, top])
    return f"{lons[0]},{lats[0]},{lons[1]},{lats[1]}"


def _grid_slices(path: Path) -> tuple[slice, slice]:
    with rasterio.open(path) as ds:
        t = ds.transform
        col0 = round((t.c - X0) / 10)
        row0 = round((Y0 - t.f) / 10)
        assert t.a == 10 and t.e == -10
        return slice(row0, row0 + ds.height), slice(col0, col0 + ds.width)


def _acquire(stac: TestServer, out: Path, *extra: str) -> int:
    return main(
        [
            "acquire",
            "--catalog",
            stac.stac_url,
            "--collection",
            "S2-TEST",
            "--start",
            "2023-07-01",
            "--end",
            "2023-07-31",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_composite_is_the_median_of_clear_values_on_the_grid(
    stac: TestServer, scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bbox = _window_bbox(260, 300, 60, 50)  # inside one 256 px tile of every asset
    rc = _acquire(stac, tmp_path, "--bbox", bbox, "--name", "area")
    assert rc == 0, capsys.readouterr().err
    image = tmp_path / "area.tif"
    rows, cols = _grid_slices(image)
    assert cols.start <= 261 and cols.stop >= 319 and rows.start <= 301 and rows.stop >= 349
    with rasterio.open(image) as ds:
        data = ds.read()
        assert ds.dtypes[0] == "int16" and ds.nodata == -9999 and ds.count == 4
        assert ds.crs == CRS_UTM
        assert ds.descriptions == ("Red", "Green", "Blue", "NIR")
        assert ds.profile.get("tiled")
    expected = expected_median(scene, rows, cols)
    np.testing.assert_array_equal(data, expected)
    unmasked = expected_median(scene, rows, cols, mask_classes=())
    assert (unmasked != expected).mean() > 0.2  # clouds, shadow, cirrus were masked
    served = sum(stac.state.served(f) for f in _asset_files(scene))
    assert served < 0.25 * scene.asset_bytes(), (served, scene.asset_bytes())
    doc = json.loads((tmp_path / "area.json").read_text())
    assert [d["date"] for d in doc["dates"]] == ["2023-07-05", "2023-07-15", "2023-07-25"]
    offsets = {it["id"]: it["assets"]["red"]["offset"] for it in doc["items"]}
    assert offsets == {"bdc-2023-07-05": 0.0, "bdc-2023-07-15": -0.1, "bdc-2023-07-25": -0.1}
    assert doc["grid"]["crs"] == "EPSG:32723"
    assert doc["grid"]["width"] == cols.stop - cols.start
    assert all(0 < it["clear_fraction"] <= 1 for it in doc["items"])
    assert doc["output"]["valid_fraction"] == pytest.approx((data[0] != -9999).mean())


def _asset_files(scene: Scene) -> list[str]:
    return [scene.band_file(d, b) for d in range(3) for b in range(4)] + [
        scene.scl_file(d) for d in range(3)
    ]

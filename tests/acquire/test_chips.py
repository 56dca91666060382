"""Capture windows around a point: inside the footprint, holding the point, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform

from pvdetect.acquire.chips import candidate_offsets, capture_windows
from pvdetect.cli import main

from .conftest import CRS_UTM, X0, Y0
from .stac_server import TestServer


def _inside(window, footprint: np.ndarray) -> bool:
    r, c, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    return (
        r >= 0
        and c >= 0
        and footprint[r : r + h, c : c + w].size == h * w
        and bool(footprint[r : r + h, c : c + w].all())
    )


def test_windows_hold_the_point_stay_inside_and_repeat_for_a_seed() -> None:
    footprint = np.zeros((120, 150), bool)
    footprint[10:110, 5:140] = True
    footprint[10:40, 5:30] = False  # a notch the windows must avoid
    point = (60.4, 70.7)
    windows = capture_windows(point, footprint, 32, 25, seed=3)
    assert len(windows) == 25
    assert len({(w.row_off, w.col_off) for w in windows}) == 25
    for w in windows:
        assert (w.height, w.width) == (32, 32)
        assert w.row_off <= 60 < w.row_off + 32 and w.col_off <= 70 < w.col_off + 32
        assert _inside(w, footprint)
    again = capture_windows(point, footprint, 32, 25, seed=3)
    assert [(w.row_off, w.col_off) for w in again] == [(w.row_off, w.col_off) for w in windows]
    other = capture_windows(point, footprint, 32, 25, seed=4)
    assert [(w.row_off, w.col_off) for w in other] != [(w.row_off, w.col_off) for w in windows]


def test_near_an_edge_only_the_fitting_windows_remain() -> None:
    footprint = np.zeros((100, 100), bool)
    footprint[:, 20:] = True
    rows, cols = candidate_offsets((50.0, 25.0), footprint, 16)
    assert cols.min() == 20 and cols.max() == 25  # left edge at the footprint, point inside
    assert rows.min() == 35 and rows.max() == 50
    assert len(rows) == 6 * 16
    assert capture_windows((50.0, 25.0), footprint, 16, 500, seed=0).__len__() == 96
    assert capture_windows((50.0, 10.0), footprint, 16, 5, seed=0) == []  # point outside
    assert capture_windows((50.0, 50.0), footprint, 128, 5, seed=0) == []  # too large


def test_acquire_chips_around_a_point(stac: TestServer, tmp_path: Path) -> None:
    # a point 30 px from the scene's no-data corner: windows must avoid the corner
    x, y = X0 + 60 * 10 + 5, Y0 - 45 * 10 - 5
    lons, lats = warp_transform(CRS_UTM, "EPSG:4326", [x], [y])
    args = [
        "acquire", "--catalog", stac.stac_url, "--collection", "S2-TEST",
        "--point", f"{lons[0]:.8f},{lats[0]:.8f}", "--start", "2023-07-01",
        "--end", "2023-07-31", "--out", str(tmp_path), "--chips", "4",
        "--chip-size", "32", "--seed", "5", "--name", "plant",
    ]  # fmt: skip
    assert main(args) == 0
    doc = json.loads((tmp_path / "plant.json").read_text())
    assert doc["request"]["size_km"] == 0.64  # two chips wide
    files = sorted((tmp_path / "images").iterdir())
    assert [f.name for f in files] == [f"plant_{k}.tif" for k in range(1, 5)]
    with rasterio.open(tmp_path / "plant.tif") as comp:
        composite = comp.read()
        assert (comp.width, comp.height) == (64, 64)
        for f, chip in zip(files, doc["chips"], strict=True):
            with rasterio.open(f) as ds:
                assert (ds.width, ds.height) == (32, 32) and ds.crs == comp.crs
                assert ds.descriptions == ("Red", "Green", "Blue", "NIR")
                assert ds.dtypes[0] == "int16" and ds.nodata == -9999
                w = chip["window"]
                t = comp.transform
                assert ds.transform == Affine(
                    10, 0, t.c + 10 * w["col_off"], 0, -10, t.f - 10 * w["row_off"]
                )
                r0, c0 = w["row_off"], w["col_off"]
                np.testing.assert_array_equal(ds.read(), composite[:, r0 : r0 + 32, c0 : c0 + 32])
                col, row = (x - ds.transform.c) / 10, (y - ds.transform.f) / -10
                assert 0 <= col < 32 and 0 <= row < 32  # the point is inside
                assert (ds.read(1) != -9999).all()  # no chip reaches into the no-data corner
    # same seed, same request: reused; another seed under the name is refused
    assert main(args) == 0
    assert main([*args[:-4], "--seed", "6", "--name", "plant"]) == 2
    # --overwrite with fewer chips removes the old extra chips, never a mask
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "plant_4.tif").write_bytes(b"hand-made")
    fewer = [*args, "--chips", "2", "--overwrite"]  # the last --chips counts
    assert main(fewer) == 0
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["plant_1.tif", "plant_2.tif"]
    assert (tmp_path / "masks" / "plant_4.tif").read_bytes() == b"hand-made"

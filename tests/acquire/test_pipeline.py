"""End-to-end acquisitions against the live test STAC API: composite, sidecar, reuse, chips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from pvdetect.cli import main

from .conftest import CRS_UTM, X0, Y0, Scene, expected_median, make_items
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


@pytest.mark.parametrize("style", ["earth-search", "pc"])
def test_earth_search_and_planetary_computer_item_styles(
    style: str, stac: TestServer, scene: Scene, tmp_path: Path
) -> None:
    stac.state.items = make_items(scene, stac, style)
    bbox = _window_bbox(520, 560, 40, 40)  # in the cloud of date 1
    assert _acquire(stac, tmp_path, "--bbox", bbox, "--name", style) == 0
    rows, cols = _grid_slices(tmp_path / f"{style}.tif")
    with rasterio.open(tmp_path / f"{style}.tif") as ds:
        np.testing.assert_array_equal(ds.read(), expected_median(scene, rows, cols))
    doc = json.loads((tmp_path / f"{style}.json").read_text())
    keys = {it["assets"]["red"]["key"] for it in doc["items"]}
    assert keys == ({"red"} if style == "earth-search" else {"B04"})
    assert not any(".jp2" in it["assets"]["red"]["href"] for it in doc["items"])
    assert [it["assets"]["nir"]["offset"] for it in doc["items"]] == [0.0, -0.1, -0.1]


def test_rerun_reuses_a_complete_output_without_the_network(
    stac: TestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--bbox", _window_bbox(100, 100, 30, 30), "--name", "same")
    assert _acquire(stac, tmp_path, *args) == 0
    first = (tmp_path / "same.tif").stat().st_mtime_ns
    seen = len(stac.state.requests)
    capsys.readouterr()
    assert _acquire(stac, tmp_path, *args) == 0
    assert "reused" in capsys.readouterr().out
    assert len(stac.state.requests) == seen
    assert (tmp_path / "same.tif").stat().st_mtime_ns == first
    # another request under the same name is refused, and nothing changes
    other = ("--bbox", _window_bbox(100, 100, 40, 30), "--name", "same")
    assert _acquire(stac, tmp_path, *other) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvdetect acquire: error: ") and "--overwrite" in err
    assert len(err.splitlines()) == 1
    assert (tmp_path / "same.tif").stat().st_mtime_ns == first
    assert _acquire(stac, tmp_path, *other, "--overwrite") == 0
    doc = json.loads((tmp_path / "same.json").read_text())
    assert doc["grid"]["width"] > 30 + 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.json", "same.tif"]


def test_offline_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    rc = main(
        [
            "acquire",
            "--catalog",
            f"http://127.0.0.1:{port}/stac/",
            "--collection",
            "S2-TEST",
            "--bbox",
            "-47.9,-15.8,-47.89,-15.79",
            "--start",
            "2023-07-01",
            "--end",
            "2023-07-31",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"pvdetect acquire: error: http://127.0.0.1:{port}/stac/: cannot reach")
    assert "offline" in err and "Traceback" not in err
    assert not out.exists()


def test_unreadable_asset_fails_cleanly_and_transient_errors_are_retried(
    stac: TestServer, scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bbox = _window_bbox(700, 700, 30, 30)
    stac.state.fail_next[scene.band_file(1, 2)] = 2  # two 503 answers, then the file
    assert _acquire(stac, tmp_path / "ok", "--bbox", bbox, "--name", "a") == 0
    assert stac.state.fail_next[scene.band_file(1, 2)] == 0
    items = make_items(scene, stac, "bdc")
    items[2]["assets"]["B08"]["href"] = stac.file_url("d2/missing.tif")
    stac.state.items = items
    out = tmp_path / "bad"
    capsys.readouterr()
    assert _acquire(stac, out, "--bbox", bbox, "--name", "a") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "d2/missing.tif" in err and "Traceback" not in err
    assert not out.exists()


def test_no_item_in_the_dates_is_a_clear_error(
    stac: TestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "acquire",
            "--catalog",
            stac.stac_url,
            "--collection",
            "S2-TEST",
            "--bbox",
            _window_bbox(100, 100, 20, 20),
            "--start",
            "2024-01-01",
            "--end",
            "2024-02-01",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no S2-TEST item" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    rc = main(
        [
            "acquire",
            "--catalog",
            stac.stac_url,
            "--collection",
            "NOPE",
            "--bbox",
            _window_bbox(100, 100, 20, 20),
            "--start",
            "2023-07-01",
            "--end",
            "2023-07-31",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--collection: 'NOPE' not found" in err


def test_point_area_and_options_checked(
    stac: TestServer, scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = X0 + 400 * 10 + 5, Y0 - 450 * 10 - 5
    lons, lats = warp_transform(CRS_UTM, "EPSG:4326", [x], [y])
    point = f"{lons[0]:.7f},{lats[0]:.7f}"
    assert _acquire(stac, tmp_path, "--point", point, "--size-km", "0.4") == 0
    out = capsys.readouterr().out
    name = next(p.stem for p in tmp_path.glob("*.tif"))
    assert name.startswith("W") and "S" in name and "_" not in name and "-" not in name
    assert name in out
    with rasterio.open(tmp_path / f"{name}.tif") as ds:
        assert (ds.width, ds.height) == (40, 40)
        col, row = ~ds.transform @ (x, y)
        assert 19 <= col <= 21 and 19 <= row <= 21
    for bad, msg in [
        (("--point", point), "--size-km: needed with --point"),
        (("--bbox", "-47,-15,-48,-14"), "--bbox: west -47 must be below east -48"),
        (("--point", point, "--size-km", "1", "--crs", "EPSG:4326"), "--crs: EPSG:4326 is not"),
        (("--point", point, "--size-km", "1", "--mask-classes", "8,x"), "--mask-classes:"),
        (("--bbox", "-48,-15,-47,-14", "--chips", "2"), "--chips: needs --point"),
    ]:
        assert _acquire(stac, tmp_path / "x", *bad) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_an_output_name_taken_by_a_folder_is_refused(
    stac: TestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken.json").mkdir()
    args = ("--bbox", _window_bbox(100, 100, 20, 20), "--name", "taken", "--overwrite")
    assert _acquire(stac, tmp_path, *args) == 2
    assert "taken.json: is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]

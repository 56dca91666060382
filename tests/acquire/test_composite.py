"""The windowed median composite: blocks, masks, days, reprojection, nodata, overviews."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pvdetect.acquire.assets import BandAsset, ItemAssets, resolve_item
from pvdetect.acquire.composite import (
    _INVALID,
    OUT_NODATA,
    block_side,
    blocks,
    build_composite,
    median_stack,
)
from pvdetect.acquire.grid import Grid, grid_for_point
from pvdetect.acquire.http import RetryPolicy

from .conftest import CRS_UTM, DATES, X0, Y0, Scene, expected_median
from .stac_server import TestServer, serve

FAST = RetryPolicy(retries=1, connect_retries=0, backoff=0.01)
ALBERS = CRS.from_proj4(
    "+proj=aea +lat_0=-12 +lon_0=-54 +lat_1=-2 +lat_2=-22 +x_0=5000000 +y_0=10000000 "
    "+ellps=GRS80 +units=m +no_defs"
)


def _resolved(stac: TestServer) -> list[ItemAssets]:
    return [resolve_item(pystac.Item.from_dict(d)) for d in stac.state.items]


def _grid(col0: int, row0: int, cols: int, rows: int, res: float = 10.0) -> Grid:
    return Grid(CRS_UTM, Affine(res, 0, X0 + col0 * 10, 0, -res, Y0 - row0 * 10), cols, rows)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_median_stack_matches_nanmedian() -> None:
    rng = np.random.default_rng(1)
    stack = rng.integers(-500, 9000, size=(5, 4, 30, 40)).astype(np.int16)
    invalid = rng.random((5, 1, 30, 40)) < 0.4
    stack = np.where(invalid, _INVALID, stack)
    stack[:, :, 0, 0] = _INVALID  # no valid value at all
    f = np.where(stack == _INVALID, np.nan, stack.astype(np.float64))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(f, axis=0)
    expected = np.where(np.isnan(expected), OUT_NODATA, np.rint(expected)).astype(np.int16)
    np.testing.assert_array_equal(median_stack(stack), expected)
    even = np.array([[[[10]], [[20]]], [[[13]], [[_INVALID]]]], np.int16).reshape(2, 2, 1, 1)
    assert median_stack(even)[:, 0, 0].tolist() == [12, 20]  # 11.5 rounds to even


def test_block_side_follows_the_memory_budget() -> None:
    sides = [block_side(d, 1024) for d in (1, 3, 12, 60, 200)]
    assert sides == sorted(sides, reverse=True) and all(s % 256 == 0 for s in sides)
    assert sides[1] >= 1536 and 512 <= sides[3] <= 1024
    # the stack of a block of 60 dates, its sorted copy and its mask stay within the budget
    assert 60 * 4 * 5 * sides[3] ** 2 < 1024 * 2**20
    assert block_side(500, 64) == 64 and block_side(100, 64) == 128
    assert block_side(1, 1e6) == 2048 and block_side(10_000, 16) == 64
    grid = _grid(0, 0, 70, 45)
    windows = list(blocks(grid, 32))
    assert len(windows) == 3 * 2
    assert sum(int(w.width * w.height) for w in windows) == 70 * 45


def test_small_blocks_give_the_same_composite(
    stac: TestServer, scene: Scene, tmp_path: Path
) -> None:
    items = _resolved(stac)
    grid = _grid(10, 15, 120, 60)  # holds the no-data corner and saturated pixels
    one = build_composite(items, grid, tmp_path / "one.tif", policy=FAST, want_coverage=True)
    many = build_composite(items, grid, tmp_path / "many.tif", policy=FAST, side=16)
    assert many.block == 16 and one.block >= 1536
    a, b = _read(tmp_path / "one.tif"), _read(tmp_path / "many.tif")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, expected_median(scene, slice(15, 75), slice(10, 130)))
    assert (a == OUT_NODATA).any()
    assert one.valid == int((a[0] != OUT_NODATA).sum()) and one.total == 120 * 60
    assert one.coverage is not None
    np.testing.assert_array_equal(one.coverage, ~scene.nodata[15:75, 10:130])
    stats = one.items[items[0].item_id]
    assert (
        stats.covered == int((~scene.nodata[15:75, 10:130]).sum())
        and 0 < stats.clear < stats.covered
    )
    assert many.items[items[0].item_id] == stats


def test_items_of_one_day_are_one_observation(
    stac: TestServer, scene: Scene, tmp_path: Path
) -> None:
    twin = copy.deepcopy(stac.state.items[1])
    twin["id"] = "bdc-2023-07-15-twin"
    twin["properties"]["datetime"] = "2023-07-15T13:20:30Z"
    stac.state.items = [*stac.state.items, twin]
    items = _resolved(stac)
    grid = _grid(500, 500, 40, 40)
    res = build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    assert list(res.dates) == list(DATES)
    np.testing.assert_array_equal(
        _read(tmp_path / "c.tif"), expected_median(scene, slice(500, 540), slice(500, 540))
    )


def test_items_without_scl_are_not_masked(stac: TestServer, scene: Scene, tmp_path: Path) -> None:
    items = [
        ItemAssets(**{**it.__dict__, "scl": None})  # type: ignore[arg-type]
        for it in _resolved(stac)
    ]
    grid = _grid(300, 280, 30, 30)
    build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    expected = expected_median(scene, slice(280, 310), slice(300, 330), mask_classes=())
    np.testing.assert_array_equal(_read(tmp_path / "c.tif"), expected)


def _constant_item(
    root: Path, server: TestServer, d: int, crs: CRS, dtype: str, tag: str
) -> ItemAssets:
    """An item whose bands are constants 1000 * (band + 1) + 10 * d, on a 200 px asset."""
    transform = Affine(10.0, 0.0, 5_700_000.0, 0.0, -10.0, 9_620_000.0)
    if crs == CRS_UTM:
        transform = Affine(10.0, 0.0, X0 + 2000, 0.0, -10.0, Y0 - 2000)
    bands = []
    for b, name in enumerate(("red", "green", "blue", "nir")):
        rel = f"const/{tag}-d{d}-{name}.tif"
        arr = np.full((200, 200), 1000 * (b + 1) + 10 * d, dtype)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="COG", width=200, height=200, count=1, dtype=dtype, crs=crs)
        nodata = -9999 if dtype == "int16" else None
        with rasterio.open(root / rel, "w", transform=transform, nodata=nodata, **profile) as ds:
            ds.write(arr, 1)
        bands.append(BandAsset(name, name, server.file_url(rel), 1e-4, 0.0))
    from datetime import UTC, datetime

    when = datetime(2023, 7, 5 + d, 13, tzinfo=UTC)
    return ItemAssets(f"c{d}", when, when.date().isoformat(), None, tuple(bands), None, {})


def test_bdc_albers_assets_are_reprojected_onto_utm(tmp_path: Path) -> None:
    root = tmp_path
    with serve(root) as server:
        items = [_constant_item(root, server, d, ALBERS, "int16", "aea") for d in range(3)]
        with rasterio.open(root / "const/aea-d0-red.tif") as ds:
            left, bottom, right, top = ds.bounds
        # a UTM grid over the asset's middle, and one reaching past its edge
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(ALBERS, "EPSG:4326", left, bottom, right, top)
        grid = grid_for_point((w + e) / 2, (s + n) / 2, 600.0, CRS_UTM, 10.0)
        build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
        out = _read(tmp_path / "c.tif")
        assert out.shape == (4, 60, 60)
        assert [int(v) for v in np.unique(out.reshape(4, -1), axis=1)[:, 0]] == [
            1010,
            2010,
            3010,
            4010,
        ]
        edge = grid_for_point(w, (s + n) / 2, 600.0, CRS_UTM, 10.0)
        build_composite(items, edge, tmp_path / "e.tif", policy=FAST)
        out = _read(tmp_path / "e.tif")
        assert (out[:, :, :20] == OUT_NODATA).all() and (
            out[:, :, 40:] == [[[1010]], [[2010]], [[3010]], [[4010]]]
        ).all()


def test_assets_without_nodata_mark_the_outside_invalid(tmp_path: Path) -> None:
    root = tmp_path
    with serve(root) as server:
        items = [_constant_item(root, server, d, CRS_UTM, "float32", "utm") for d in range(2)]
        grid = _grid(150, 150, 100, 100)  # the assets cover cols/rows 200..400
        build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
        out = _read(tmp_path / "c.tif")
        assert (out[:, :50, :] == OUT_NODATA).all() and (out[:, :, :50] == OUT_NODATA).all()
        assert (out[0, 50:, 50:] == 1005).all()  # median of 1000 and 1010: 1005


def test_coarse_grids_read_the_overviews(stac: TestServer, scene: Scene, tmp_path: Path) -> None:
    items = _resolved(stac)
    grid = _grid(256, 256, 32, 32, res=40.0)  # 128 x 128 full-resolution pixels
    build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    out = _read(tmp_path / "c.tif")
    values, clear = [], []
    for d in range(3):
        bands = []
        for b in range(4):
            with rasterio.open(scene.root / scene.band_file(d, b), overview_level=1) as ds:
                assert ds.res == (40.0, 40.0)
                bands.append(ds.read(1)[64:96, 64:96].astype(np.int32) - (1000 if d else 0))
        with rasterio.open(scene.root / scene.scl_file(d), overview_level=0) as ds:
            scl = ds.read(1)[64:96, 64:96]
        values.append(np.stack(bands))
        clear.append(~np.isin(scl, (0, 1, 3, 8, 9, 10, 11)))
    stack = np.stack(values).astype(np.float64)
    stack[~np.stack(clear)[:, None].repeat(4, 1)] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        med = np.nanmedian(stack, axis=0)
    np.testing.assert_array_equal(out, np.where(np.isnan(med), -9999, np.rint(med)))
    served = sum(stac.state.served(scene.band_file(d, b)) for d in range(3) for b in range(4))
    assert served < 0.1 * sum(
        (scene.root / scene.band_file(d, b)).stat().st_size for d in range(3) for b in range(4)
    )


def test_pixels_outside_the_classification_count_as_no_data(tmp_path: Path) -> None:
    """Outside the SCL raster (whose own nodata is 255 here) pixels are class 0, no data."""
    with serve(tmp_path) as server:
        items = []
        for d in range(2):
            it = _constant_item(tmp_path, server, d, CRS_UTM, "int16", "scl")
            rel = f"const/scl-d{d}-scl.tif"
            with rasterio.open(
                tmp_path / rel, "w", driver="COG", width=50, height=100, count=1,
                dtype="uint8", crs=CRS_UTM, nodata=255,
                transform=Affine(20.0, 0.0, X0 + 2000, 0.0, -20.0, Y0 - 2000),
            ) as ds:  # fmt: skip
                ds.write(np.full((100, 50), 4, np.uint8), 1)  # the west half only, clear
            items.append(
                ItemAssets(**{**it.__dict__, "scl": BandAsset("scl", "scl", server.file_url(rel))})
            )
        grid = _grid(200, 200, 200, 200)
        build_composite(items, grid, tmp_path / "a.tif", policy=FAST)
        out = _read(tmp_path / "a.tif")
        assert (out[:, :, :100] == [[[1005]], [[2005]], [[3005]], [[4005]]]).all()
        assert (out[:, :, 100:] == OUT_NODATA).all()
        build_composite(items, grid, tmp_path / "b.tif", policy=FAST, mask_classes=(8, 9))
        assert (_read(tmp_path / "b.tif")[0] == 1005).all()

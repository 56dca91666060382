"""The windowed median composite: blocks, masks, days, reprojection, nodata, overviews."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest

from pvdetect.acquire.assets import ItemAssets
from pvdetect.acquire.composite import block_side, blocks, build_composite, median_stack
from pvdetect.acquire.readers import INVALID, OUT_NODATA

from .conftest import (
    DATES,
    FAST,
    Scene,
    expected_median,
    read_all,
    resolved_items,
    scene_grid,
)
from .stac_server import TestServer


def test_median_stack_matches_nanmedian() -> None:
    rng = np.random.default_rng(1)
    stack = rng.integers(-500, 9000, size=(5, 4, 30, 40)).astype(np.int16)
    invalid = rng.random((5, 1, 30, 40)) < 0.4
    stack = np.where(invalid, INVALID, stack)
    stack[:, :, 0, 0] = INVALID  # no valid value at all
    f = np.where(stack == INVALID, np.nan, stack.astype(np.float64))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(f, axis=0)
    expected = np.where(np.isnan(expected), OUT_NODATA, np.rint(expected)).astype(np.int16)
    np.testing.assert_array_equal(median_stack(stack), expected)
    even = np.array([[[[10]], [[20]]], [[[13]], [[INVALID]]]], np.int16).reshape(2, 2, 1, 1)
    assert median_stack(even)[:, 0, 0].tolist() == [12, 20]  # 11.5 rounds to even


def test_block_side_follows_the_memory_budget() -> None:
    sides = [block_side(d, 1024) for d in (1, 3, 12, 60, 200)]
    assert sides == sorted(sides, reverse=True) and all(s % 256 == 0 for s in sides)
    assert sides[1] >= 1536 and 512 <= sides[3] <= 1024
    # the stack of a block of 60 dates, its sorted copy and its mask stay within the budget
    assert 60 * 4 * 5 * sides[3] ** 2 < 1024 * 2**20
    assert block_side(500, 64) == 64 and block_side(100, 64) == 128
    assert block_side(1, 1e6) == 2048 and block_side(10_000, 16) == 64
    grid = scene_grid(0, 0, 70, 45)
    windows = list(blocks(grid, 32))
    assert len(windows) == 3 * 2
    assert sum(int(w.width * w.height) for w in windows) == 70 * 45


def test_small_blocks_give_the_same_composite(
    stac: TestServer, scene: Scene, tmp_path: Path
) -> None:
    items = resolved_items(stac)
    grid = scene_grid(10, 15, 120, 60)  # holds the no-data corner and saturated pixels
    one = build_composite(items, grid, tmp_path / "one.tif", policy=FAST, want_coverage=True)
    many = build_composite(items, grid, tmp_path / "many.tif", policy=FAST, side=16)
    assert many.block == 16 and one.block >= 1536
    a, b = read_all(tmp_path / "one.tif"), read_all(tmp_path / "many.tif")
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
    """A second item of 2023-07-15 (the pixels of 2023-07-05) only fills where the first is
    not clear: one observation that day, the first clear value in id order."""
    twin = copy.deepcopy(stac.state.items[0])
    twin["id"] = "bdc-2023-07-15-twin"
    twin["properties"]["datetime"] = "2023-07-15T13:20:30Z"
    stac.state.items = [*stac.state.items, twin]
    items = resolved_items(stac)
    rows, cols = slice(480, 560), slice(640, 720)  # the edge of the cloud of 2023-07-15
    grid = scene_grid(cols.start, rows.start, 80, 80)
    res = build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    assert list(res.dates) == list(DATES)
    masked = (0, 1, 3, 8, 9, 10, 11)
    obs = []
    clear = []
    for d in range(3):
        scl = np.repeat(np.repeat(scene.scl[d], 2, 0), 2, 1)[rows, cols]
        obs.append(scene.reflectance[d][:, rows, cols].astype(np.float64))
        clear.append(~np.isin(scl, masked))
    day1 = np.where(clear[1], obs[1], obs[0])
    clear1 = clear[1] | clear[0]
    assert (~clear[1] & clear[0]).sum() > 100  # the twin fills a real part of the day
    assert (clear[1] & clear[0]).sum() > 100  # and is not taken where the first is clear
    stack = np.stack([obs[0], day1, obs[2]])
    stack[~np.stack([clear[0], clear1, clear[2]])[:, None].repeat(4, 1)] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=0)
    expected = np.where(np.isnan(med), OUT_NODATA, np.rint(med)).astype(np.int16)
    np.testing.assert_array_equal(read_all(tmp_path / "c.tif"), expected)


def test_items_without_scl_are_not_masked(stac: TestServer, scene: Scene, tmp_path: Path) -> None:
    items = [
        ItemAssets(**{**it.__dict__, "scl": None})  # type: ignore[arg-type]
        for it in resolved_items(stac)
    ]
    grid = scene_grid(300, 280, 30, 30)
    build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    expected = expected_median(scene, slice(280, 310), slice(300, 330), mask_classes=())
    np.testing.assert_array_equal(read_all(tmp_path / "c.tif"), expected)

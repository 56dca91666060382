"""Asset readers: reprojection (BDC's Albers), nodata rules, overviews, the SCL's extent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from pvdetect.acquire.assets import BandAsset, ItemAssets
from pvdetect.acquire.composite import build_composite
from pvdetect.acquire.grid import grid_for_point
from pvdetect.acquire.readers import OUT_NODATA

from .conftest import CRS_UTM, FAST, X0, Y0, Scene, read_all, resolved_items, scene_grid
from .stac_server import TestServer, serve

ALBERS = CRS.from_proj4(
    "+proj=aea +lat_0=-12 +lon_0=-54 +lat_1=-2 +lat_2=-22 +x_0=5000000 +y_0=10000000 "
    "+ellps=GRS80 +units=m +no_defs"
)


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
    when = datetime(2023, 7, 5 + d, 13, tzinfo=UTC)
    return ItemAssets(f"c{d}", when, when.date().isoformat(), None, tuple(bands), None, {})


def test_bdc_albers_assets_are_reprojected_onto_utm(tmp_path: Path) -> None:
    root = tmp_path
    with serve(root) as server:
        items = [_constant_item(root, server, d, ALBERS, "int16", "aea") for d in range(3)]
        with rasterio.open(root / "const/aea-d0-red.tif") as ds:
            left, bottom, right, top = ds.bounds
        # a UTM grid over the asset's middle, and one reaching past its edge
        w, s, e, n = transform_bounds(ALBERS, "EPSG:4326", left, bottom, right, top)
        grid = grid_for_point((w + e) / 2, (s + n) / 2, 600.0, CRS_UTM, 10.0)
        build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
        out = read_all(tmp_path / "c.tif")
        assert out.shape == (4, 60, 60)
        assert [int(v) for v in np.unique(out.reshape(4, -1), axis=1)[:, 0]] == [
            1010,
            2010,
            3010,
            4010,
        ]
        edge = grid_for_point(w, (s + n) / 2, 600.0, CRS_UTM, 10.0)
        build_composite(items, edge, tmp_path / "e.tif", policy=FAST)
        out = read_all(tmp_path / "e.tif")
        assert (out[:, :, :20] == OUT_NODATA).all() and (
            out[:, :, 40:] == [[[1010]], [[2010]], [[3010]], [[4010]]]
        ).all()


def test_assets_without_nodata_mark_the_outside_invalid(tmp_path: Path) -> None:
    root = tmp_path
    with serve(root) as server:
        items = [_constant_item(root, server, d, CRS_UTM, "float32", "utm") for d in range(2)]
        grid = scene_grid(150, 150, 100, 100)  # the assets cover cols/rows 200..400
        build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
        out = read_all(tmp_path / "c.tif")
        assert (out[:, :50, :] == OUT_NODATA).all() and (out[:, :, :50] == OUT_NODATA).all()
        assert (out[0, 50:, 50:] == 1005).all()  # median of 1000 and 1010: 1005


def test_coarse_grids_read_the_overviews(stac: TestServer, scene: Scene, tmp_path: Path) -> None:
    items = resolved_items(stac)
    grid = scene_grid(256, 256, 32, 32, res=40.0)  # 128 x 128 full-resolution pixels
    build_composite(items, grid, tmp_path / "c.tif", policy=FAST)
    out = read_all(tmp_path / "c.tif")
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
        grid = scene_grid(200, 200, 200, 200)
        build_composite(items, grid, tmp_path / "a.tif", policy=FAST)
        out = read_all(tmp_path / "a.tif")
        assert (out[:, :, :100] == [[[1005]], [[2005]], [[3005]], [[4005]]]).all()
        assert (out[:, :, 100:] == OUT_NODATA).all()
        build_composite(items, grid, tmp_path / "b.tif", policy=FAST, mask_classes=(8, 9))
        assert (read_all(tmp_path / "b.tif")[0] == 1005).all()

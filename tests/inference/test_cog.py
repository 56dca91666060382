"""Tests of pvdetect.inference.cog: overview levels built from streamed rows, COG assembly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

from pvdetect.data.raster import geotiff_profile
from pvdetect.inference.cog import Pyramid, overview_sizes, write_cog

T = Affine(10, 0, 500000, 0, -10, 5300000)
ND = -9999.0


def _profile(h: int, w: int, dtype: str, nodata: float) -> dict:
    return geotiff_profile(
        height=h, width=w, count=1, dtype=dtype, crs="EPSG:32633", transform=T, nodata=nodata
    )


def _stream(tmp: Path, name: str, data: np.ndarray, prof: dict, resampling: str, chunks) -> Path:
    """Write ``data`` row chunk by row chunk into a GeoTIFF and a Pyramid; returns the COG."""
    full = tmp / f"{name}.tif"
    with rasterio.open(full, "w", **prof) as dst, Pyramid(tmp, name, prof, resampling) as pyr:
        row, k = 0, 0
        while row < data.shape[0]:
            n = min(chunks[k % len(chunks)], data.shape[0] - row)
            dst.write(
                data[row : row + n], 1, window=rasterio.windows.Window(0, row, data.shape[1], n)
            )
            pyr.add_rows(row, data[row : row + n])
            row, k = row + n, k + 1
    out = tmp / f"{name}_cog.tif"
    write_cog(full, out, pyramid=pyr, description="PV probability")
    assert not full.with_suffix(".vrt").exists()  # the VRT handed to GDAL is gone
    return out


def test_overview_sizes_halve_until_one_block() -> None:
    assert overview_sizes(256, 256) == []
    assert overview_sizes(257, 10) == [(129, 5)]
    assert overview_sizes(1024, 601) == [(512, 301), (256, 151)]


def _block_mean(a: np.ndarray) -> np.ndarray:
    """Reference: mean of the valid pixels of each 2 x 2 block (padding odd sizes)."""
    h, w = a.shape
    p = np.full((h + h % 2, w + w % 2), np.nan)
    p[:h, :w] = np.where(a == ND, np.nan, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nodata blocks: "empty slice"
        m = np.nanmean(p.reshape(p.shape[0] // 2, 2, -1, 2), axis=(1, 3))
    return np.where(np.isnan(m), ND, m)


@pytest.mark.parametrize("chunks", [[7], [64, 3, 192], [1000]])
def test_average_levels_match_gdal(tmp_path: Path, chunks: list[int]) -> None:
    """Streamed 2x2 averages equal GDAL's own average overviews; nodata stays nodata."""
    rng = np.random.default_rng(0)
    h, w = 520, 600
    data = rng.random((h, w)).astype(np.float32)
    data[100:140, 200:260] = ND  # a nodata block, aligned and not
    data[301, 3] = ND
    prof = _profile(h, w, "float32", ND)
    ours = _stream(tmp_path, "p", data, prof, "average", chunks)
    ref = tmp_path / "ref.tif"
    rasterio.shutil.copy(
        str(tmp_path / "p.tif"), str(ref), driver="COG", compress="DEFLATE",
        overview_resampling="average", blocksize=256,
    )  # fmt: skip
    with rasterio.open(ours) as a, rasterio.open(ref) as b:
        assert a.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        assert a.descriptions == ("PV probability",)
        assert a.nodata == ND and a.crs == b.crs and a.transform == T
        np.testing.assert_array_equal(a.read(1), data)
        for k in (1, 2):  # overview levels, as a reader gets them
            shape = (h // 2**k, w // 2**k)
            x, y = a.read(1, out_shape=shape), b.read(1, out_shape=shape)
            np.testing.assert_array_equal(x == ND, y == ND)
            np.testing.assert_allclose(x[x != ND], y[y != ND], atol=1e-6)


@pytest.mark.parametrize("chunks", [[7], [1, 2, 5], [1000]])
def test_average_levels_of_odd_sizes(tmp_path: Path, chunks: list[int]) -> None:
    """Odd sizes: the last row and column are averaged alone; levels cascade."""
    rng = np.random.default_rng(2)
    h, w = 523, 601
    data = rng.random((h, w)).astype(np.float32)
    data[100:140, 200:259] = ND
    data[-1, -2:] = ND
    ours = _stream(tmp_path, "p", data, _profile(h, w, "float32", ND), "average", chunks)
    level1 = _block_mean(data)
    with rasterio.open(ours) as ds:
        assert ds.overviews(1) == [2, 4]
    for k, want in ((0, level1), (1, _block_mean(level1))):
        with rasterio.open(ours, OVERVIEW_LEVEL=k) as lvl:
            got = lvl.read(1)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got == ND, want == ND)
        np.testing.assert_allclose(got[got != ND], want[want != ND], rtol=1e-6)
    assert level1[-1, -1] == ND and level1[-1, -2] == pytest.approx(data[-1, -3:-2].mean())


def test_nearest_levels_keep_mask_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    m = rng.integers(0, 2, size=(300, 517)).astype(np.uint8)
    m[:, :9] = 255
    out = _stream(tmp_path, "m", m, _profile(300, 517, "uint8", 255), "nearest", [50])
    with rasterio.open(out, OVERVIEW_LEVEL=0) as lvl:
        top = lvl.read(1)
    assert top.shape == (150, 259)
    np.testing.assert_array_equal(top[:, :-1], m[1::2, 1::2])
    np.testing.assert_array_equal(top[:, -1], m[1::2, -1])


def test_small_raster_gets_no_levels(tmp_path: Path) -> None:
    data = np.ones((40, 70), np.float32)
    out = _stream(tmp_path, "s", data, _profile(40, 70, "float32", ND), "average", [40])
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == []
        np.testing.assert_array_equal(ds.read(1), data)


def test_rows_out_of_order_and_bad_resampling(tmp_path: Path) -> None:
    prof = _profile(300, 300, "float32", ND)
    with Pyramid(tmp_path, "x", prof, "average") as pyr:
        pyr.add_rows(0, np.zeros((10, 300), np.float32))
        with pytest.raises(ValueError, match="expected 10"):
            pyr.add_rows(20, np.zeros((10, 300), np.float32))
    with pytest.raises(ValueError, match="resampling"):
        Pyramid(tmp_path, "y", prof, "bilinear")


def _block_max(a: np.ndarray, nodata: int = 255) -> np.ndarray:
    """Reference: maximum of the valid pixels of each 2 x 2 block (padding odd sizes)."""
    h, w = a.shape
    p = np.full((h + h % 2, w + w % 2), -1, np.int64)
    p[:h, :w] = np.where(a == nodata, -1, a.astype(np.int64))
    m = p.reshape(p.shape[0] // 2, 2, -1, 2).max(axis=(1, 3))
    return np.where(m < 0, nodata, m).astype(np.uint8)


@pytest.mark.parametrize("chunks", [[7], [1, 2, 5], [1000]])
def test_max_levels_keep_every_plant(tmp_path: Path, chunks: list[int]) -> None:
    """Mask overviews: the maximum of the valid pixels, so one PV pixel survives every level."""
    h, w = 523, 601
    m = np.zeros((h, w), np.uint8)
    m[:, :9] = 255
    m[100:104, 300:302] = 255
    m[200, 200] = 1  # one PV pixel at even coordinates: every second pixel would lose it
    m[-1, -1] = 1
    out = _stream(tmp_path, "m", m, _profile(h, w, "uint8", 255), "max", chunks)
    level1 = _block_max(m)
    for k, want in ((0, level1), (1, _block_max(level1))):
        with rasterio.open(out, OVERVIEW_LEVEL=k) as lvl:
            np.testing.assert_array_equal(lvl.read(1), want)
    assert want[50, 50] == 1 and want[-1, -1] == 1 and want[0, 0] == 255 and want[0, 3] == 0


def test_colour_table(tmp_path: Path) -> None:
    m = np.zeros((300, 300), np.uint8)
    prof = _profile(300, 300, "uint8", 255)
    full = tmp_path / "m.tif"
    with rasterio.open(full, "w", **prof) as dst, Pyramid(tmp_path, "m", prof, "max") as pyr:
        dst.write(m, 1)
        pyr.add_rows(0, m)
    colors = {0: (0, 0, 0, 0), 1: (255, 0, 255, 255), 255: (0, 0, 0, 0)}
    write_cog(full, tmp_path / "c.tif", pyramid=pyr, colormap=colors)
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.colorinterp[0] == rasterio.enums.ColorInterp.palette
        assert ds.colormap(1)[1] == (255, 0, 255, 255)
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2]

"""Tests of pvdetect.inference.overlay: quick-look sampling, stretch, PNG encoding, outlines."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from shapely.geometry import box

from pvdetect.data.raster import raster_info
from pvdetect.inference.overlay import OUTLINE_RGB, QuickLook, png_bytes, stretch, write_overlay
from pvdetect.inference.predict import _StripReader
from pvdetect.inference.vectorize import Plant
from tests.fixtures import write_scene

T = Affine(10, 0, 500000, 0, -10, 5300000)


def _plan(scene: Path, **kw) -> SimpleNamespace:
    info = raster_info(scene)
    return SimpleNamespace(info=info, bands=[1, 2, 3, 4], rgb=[1, 2, 3], nodata=-9999.0, **kw)


@pytest.mark.parametrize(("max_side", "shape"), [(60, (60, 44)), (400, (203, 150))])
def test_quicklook_matches_a_decimated_read(
    tmp_path: Path, max_side: int, shape: tuple[int, int]
) -> None:
    """The overlay pixels collected while predicting equal a nearest decimated read."""
    rng = np.random.default_rng(3)
    img = rng.uniform(100, 3000, size=(4, 203, 150)).astype(np.float32)
    img[:, :7, :9] = -9999.0
    scene = tmp_path / "s.tif"
    write_scene(scene, img, transform=Affine(10, 0, 0, 0, -10, 0))
    plan = _plan(scene, tile=64, padded_width=192)
    ql = QuickLook(plan, max_side=max_side)
    with rasterio.open(scene) as ds:
        reader = _StripReader(ds, plan)
        for y0, n in ((0, 48), (48, 48), (96, 48), (144, 59)):
            raw, valid = reader.read_strip(y0)
            ql.add(y0, n, raw, valid)
        ref = ds.read([1, 2, 3], out_shape=ql.rgb.shape, resampling=Resampling.nearest)
    assert ql.rgb.shape == (3, *shape)
    ok = ql.valid
    assert not ok.all() and ok.any()
    assert np.allclose(ql.rgb[:, ok], ref[:, ok], rtol=1e-3)
    assert np.array_equal(~ok, (ref == -9999.0).all(axis=0))


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (1, 9), (64, 33)])
def test_png_round_trips_exactly(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 1)  # wrap-around of the Sub filter in both directions
    back = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))))
    assert back.shape == (*shape, 3)
    assert np.array_equal(back, rgb)


def test_png_rejects_other_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4), dtype=np.uint8))


def test_stretch_maps_percentiles_and_blanks_invalid() -> None:
    band = np.arange(10000, dtype=np.float32).reshape(100, 100)
    valid = np.ones_like(band, dtype=bool)
    valid[0, :10] = False
    out = stretch(band, valid)
    assert out.dtype == np.uint8
    assert (out[0, :10] == 0).all()
    assert out[1, 0] == 0 and out[-1, -1] == 255  # below p2 / above p98 saturate
    assert 120 <= out[50, 0] <= 135  # the middle stays in the middle
    assert (stretch(band, np.zeros_like(valid)) == 0).all()


def test_overlay_draws_outlines_on_the_stretched_scene(tmp_path: Path) -> None:
    img = np.full((4, 40, 50), 1000.0, dtype=np.float32)
    img[:, 20:, :] = 3000.0
    img[:, :, :3] = -9999.0
    scene = tmp_path / "s.tif"
    write_scene(scene, img, transform=T)
    plan = _plan(scene)
    plant = Plant(1, box(500000 + 100, 5300000 - 300, 500000 + 300, 5300000 - 100), 4e4, 0.9, 1)
    out = tmp_path / "o.png"
    write_overlay(out, plan, [plant], max_side=2048)  # no quick-look: reads the scene
    pic = np.asarray(Image.open(out))
    assert pic.shape == (40, 50, 3)
    assert (pic[:, :3] == 0).all()  # nodata stays black
    assert (pic[5, 5] == 0).all() and (pic[35, 45] == 255).all()  # dark and bright halves
    edge = (pic == OUTLINE_RGB).all(axis=-1)
    assert edge[10, 10:31].all() and edge[10:31, 10].all()  # the plant's box outline
    assert not edge[20, 20]  # inside stays the scene
    assert edge.sum() < 120

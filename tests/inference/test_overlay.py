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

from pvdetect.data.raster import raster_info, write_raster
from pvdetect.inference.colours import OUTLINE_RGB
from pvdetect.inference.overlay import QuickLook, png_bytes, stretch, write_overlay
from pvdetect.inference.plants import Plant
from pvdetect.inference.tiling import StripReader
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
        reader = StripReader(ds, plan)
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


def _scene(tmp_path: Path, h: int = 400, w: int = 300) -> Path:
    rng = np.random.default_rng(4)
    img = rng.uniform(500, 2500, (4, h, w)).astype(np.float32)
    return write_raster(tmp_path / "s.tif", img, crs="EPSG:32633", transform=T)


def test_overlay_is_georeferenced_by_world_file_and_aux_xml(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    out = tmp_path / "o.png"
    t = write_overlay(
        out, _plan(scene), [], max_side=200,
        georef=(tmp_path / "o.pgw", tmp_path / "o.png.aux.xml"),
    )  # fmt: skip
    assert t == T @ Affine.scale(2)
    with rasterio.open(scene) as src, rasterio.open(out) as ov:
        assert (ov.width, ov.height) == (150, 200)
        assert ov.crs == src.crs and ov.transform == t
        assert ov.bounds == pytest.approx(src.bounds)
    # geographic CRS: the axis order is still x = longitude
    geo = write_raster(tmp_path / "g.tif", np.ones((4, 30, 40), np.float32), crs="EPSG:4326",
                       transform=Affine(0.001, 0, 15.0, 0, -0.001, 48.0))  # fmt: skip
    write_overlay(tmp_path / "g.png", _plan(geo), [],
                  georef=(tmp_path / "g.pgw", tmp_path / "g.png.aux.xml"))  # fmt: skip
    with rasterio.open(tmp_path / "g.png") as ov:
        assert ov.crs.to_epsg() == 4326
        assert ov.bounds == pytest.approx((15.0, 47.97, 15.04, 48.0))


def test_legend_scale_bar_and_coordinates(tmp_path: Path) -> None:
    from pvdetect.inference.decorations import decorate, nice_length, scale_bar_metres

    assert [nice_length(v) for v in (0.3, 7, 180, 2400, 99999)] == [1, 5, 100, 2000, 50000]
    # 10 m pixels near UTM's central meridian: ground metres = 10 / 0.9996 per pixel
    assert scale_bar_metres(T, "EPSG:32633", 300, 400) == pytest.approx(10 / 0.9996, rel=1e-3)
    scene = _scene(tmp_path)
    plain, decorated = tmp_path / "p.png", tmp_path / "d.png"
    write_overlay(plain, _plan(scene), [], decorate=False)
    write_overlay(decorated, _plan(scene), [], decorate=True)
    a = np.asarray(Image.open(plain)).astype(int)
    b = np.asarray(Image.open(decorated)).astype(int)
    changed = (a != b).any(axis=-1)
    assert changed[-40:, :120].any()  # legend, lower left
    assert changed[-40:, -120:].any()  # scale bar, lower right
    assert changed[:30, :150].any()  # upper-left coordinates
    assert not changed[150:250, 100:200].any()  # the middle of the picture stays the scene
    legend = b[-40:, :40]
    assert ((legend == OUTLINE_RGB).all(axis=-1)).any()  # the PV outline colour in the key
    # small pictures get no decorations; the picture is changed in place and returned
    small = np.zeros((100, 150, 3), np.uint8)
    assert decorate(small, T, "EPSG:32633", plants=1, outline_rgb=OUTLINE_RGB) is small
    assert not small.any()

"""Tests of pvdetect.data.radiometry: offsets and scales from options or metadata, and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pvdetect.data.layouts import ChipRecord
from pvdetect.data.packed import build_cache, fingerprint
from pvdetect.data.radiometry import RadiometryOptions, radiometry_for
from pvdetect.data.raster import raster_info, write_raster
from pvdetect.errors import ConfigError

T = Affine(10, 0, 500000, 0, -10, 5300000)
S2 = ["B04", "B03", "B02", "B08"]


def _dn(path: Path, values: np.ndarray, descriptions=S2, tags=None, band_tags=None) -> Path:
    write_raster(path, values.astype(np.uint16), crs="EPSG:32633", transform=T, nodata=0)
    with rasterio.open(path, "r+") as ds:
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
        if tags:
            ds.update_tags(**tags)
        for i, t in enumerate(band_tags or [], start=1):
            ds.update_tags(i, **t)
    return path


def _values(path: Path, options: RadiometryOptions | None = None) -> np.ndarray:
    info = raster_info(path)
    with rasterio.open(path) as ds:
        data = ds.read(out_dtype="float32")
    return radiometry_for(info, [1, 2, 3, 4], options).apply(data)


@pytest.fixture
def dn() -> np.ndarray:
    return np.random.default_rng(0).integers(100, 5000, (4, 6, 6))


def test_boa_add_offset_per_band_keys(tmp_path: Path, dn: np.ndarray) -> None:
    """BOA_ADD_OFFSET_Bx dataset keys (short and long band ids) undo the +1000 of PB 04.00."""
    tags = {"BOA_ADD_OFFSET_B4": "-1000", "BOA_ADD_OFFSET_B03": "-1000",
            "BOA_ADD_OFFSET_B2": "-1000", "BOA_ADD_OFFSET_B8": "-1000",
            "BOA_QUANTIFICATION_VALUE": "10000"}  # fmt: skip
    f = _dn(tmp_path / "s.tif", dn + 1000, tags=tags)
    rad = radiometry_for(raster_info(f), [1, 2, 3, 4])
    assert rad.gain == (1.0,) * 4 and rad.bias == (-1000.0,) * 4
    assert "BOA_ADD_OFFSET" in rad.describe()
    np.testing.assert_array_equal(_values(f), dn.astype(np.float32))


def test_offset_in_band_metadata_and_aux_xml(tmp_path: Path, dn: np.ndarray) -> None:
    f = _dn(tmp_path / "b.tif", dn + 1000, band_tags=[{"BOA_ADD_OFFSET": "-1000"}] * 4)
    np.testing.assert_array_equal(_values(f), dn.astype(np.float32))
    # a product exported without band names: the dataset's keys all agree, so they apply
    g = _dn(tmp_path / "a.tif", dn + 1000, descriptions=None)
    items = "".join(f'<MDI key="BOA_ADD_OFFSET_B{b}">-1000</MDI>' for b in (2, 3, 4, 8, 11))
    Path(f"{g}.aux.xml").write_text(f"<PAMDataset><Metadata>{items}</Metadata></PAMDataset>")
    np.testing.assert_array_equal(_values(g), dn.astype(np.float32))


def test_quantification_value_and_product_band_ids(tmp_path: Path, dn: np.ndarray) -> None:
    """The 0-based band_id of MTD_MSIL2A.xml (B04 = 3, B08 = 7) and a quantification of 1000."""
    tags = {f"BOA_ADD_OFFSET_{i}": "-100" for i in (1, 2, 3, 7)}
    tags["BOA_QUANTIFICATION_VALUE"] = "1000"
    f = _dn(tmp_path / "s.tif", dn, tags=tags)
    np.testing.assert_allclose(_values(f), (dn - 100) * 10.0)


def test_gdal_scale_offset_in_reflectance_units(tmp_path: Path, dn: np.ndarray) -> None:
    """GDAL scale 1e-4 and offset -0.1: reflectance 0..1, taken x 10000 (= DN - 1000)."""
    f = _dn(tmp_path / "s.tif", dn + 1000, tags={"BOA_ADD_OFFSET": "-1000"})
    with rasterio.open(f, "r+") as ds:
        ds.scales = (1e-4,) * 4
        ds.offsets = (-0.1,) * 4
    rad = radiometry_for(raster_info(f), [1, 2, 3, 4])
    assert rad.source == "GDAL band scale/offset"  # not applied twice with the metadata
    np.testing.assert_allclose(_values(f), dn, atol=1e-3)


def test_options_override_the_file(tmp_path: Path, dn: np.ndarray) -> None:
    f = _dn(tmp_path / "s.tif", dn + 1000, tags={"BOA_ADD_OFFSET": "-1000"})
    np.testing.assert_array_equal(_values(f, RadiometryOptions.parse("-1000")), dn)
    np.testing.assert_array_equal(_values(f, RadiometryOptions.parse(scale="2")), (dn + 1000) * 2)
    per_band = RadiometryOptions.parse("-1000,-1000,0,-500")
    np.testing.assert_array_equal(
        _values(f, per_band), dn + 1000 + np.array([-1000, -1000, 0, -500])[:, None, None]
    )
    np.testing.assert_allclose(_values(f, RadiometryOptions.parse("-0.1", "0.0001")), dn, atol=1e-3)
    # a file of reflectance in 0..1
    refl = tmp_path / "r.tif"
    write_raster(refl, (dn / 10000.0).astype(np.float32), crs="EPSG:32633", transform=T)
    np.testing.assert_allclose(_values(refl, RadiometryOptions.parse(scale="10000")), dn, rtol=1e-5)


def test_plain_files_are_read_as_stored(tmp_path: Path, dn: np.ndarray) -> None:
    f = _dn(tmp_path / "s.tif", dn, tags={"BOA_QUANTIFICATION_VALUE": "10000"})
    assert radiometry_for(raster_info(f), [1, 2, 3, 4]).identity


def test_bad_options() -> None:
    for kwargs, match in (({"offset": "x"}, "--offset x"), ({"scale": "0"}, "must not be 0"),
                          ({"offset": "1,nan"}, "finite")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            RadiometryOptions.parse(**kwargs)
    with pytest.raises(ConfigError, match="3 values for 4 bands"):
        radiometry_for(_fake_info(), [1, 2, 3, 4], RadiometryOptions.parse("1,2,3"))


def _fake_info():
    from pvdetect.data.raster import RasterInfo

    return RasterInfo(Path("x.tif"), 4, 2, 2, "uint16", None, T, 0, (None,) * 4)


def test_packed_cache_corrects_chips_and_fingerprints_options(
    tmp_path: Path, dn: np.ndarray
) -> None:
    """Chips of a post-2022 product are packed as reflectance x 10000; --offset is a new cache."""
    mask = tmp_path / "m.tif"
    write_raster(mask, np.zeros((1, 6, 6), np.uint8), crs="EPSG:32633", transform=T, nodata=255)
    new = _dn(tmp_path / "new.tif", dn + 1000, band_tags=[{"BOA_ADD_OFFSET": "-1000"}] * 4)
    old = _dn(tmp_path / "old.tif", dn)
    recs = [ChipRecord(new, mask, "train", "a", "new"), ChipRecord(old, mask, "train", "b", "old")]
    cache = build_cache(recs, tmp_path / "cache")
    np.testing.assert_array_equal(cache.images[0], cache.images[1])
    np.testing.assert_array_equal(cache.images[1], dn.astype(np.float32))
    opt = RadiometryOptions.parse("-1000")
    assert fingerprint(recs) != fingerprint(recs, radiometry=opt)
    assert fingerprint(recs) == fingerprint(recs, radiometry=RadiometryOptions())
    shifted = build_cache(recs, tmp_path / "cache", radiometry=opt)
    assert shifted.fingerprint != cache.fingerprint
    np.testing.assert_array_equal(shifted.images[1], dn - 1000.0)

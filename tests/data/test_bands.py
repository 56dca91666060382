"""Tests of pvdetect.data.bands: Sentinel-2 band names, band selection for a wanted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pvdetect.data.bands import band_id, parse_band_spec, resolve_band_order, resolve_bands
from pvdetect.data.raster import raster_info, write_raster
from pvdetect.errors import ConfigError, DataError

T = Affine(10, 0, 500000, 0, -10, 5300000)
WANTED = ["Red", "Green", "Blue", "NIR"]


def _file(path: Path, descriptions: list[str | None], tags: list[dict] | None = None) -> Path:
    n = len(descriptions)
    arr = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 8, 8), np.float32)
    write_raster(path, arr, crs="EPSG:32633", transform=T, nodata=-9999)
    with rasterio.open(path, "r+") as ds:
        for i, d in enumerate(descriptions, start=1):
            if d is not None:
                ds.set_band_description(i, d)
        for i, t in enumerate(tags or [], start=1):
            ds.update_tags(i, **t)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B4", "B04"), ("b04", "B04"), ("red", "B04"), ("Red", "B04"), ("B3", "B03"),
        ("green", "B03"), ("B02", "B02"), ("blue", "B02"), ("B8", "B08"), ("nir", "B08"),
        ("NIR", "B08"), ("near infrared", "B08"), ("B8A", "B8A"), ("b08a", "B8A"),
        ("nir08", "B8A"), ("NIR narrow", "B8A"), ("B4, central wavelength 665 nm", "B04"),
        ("B8A, central wavelength 865 nm", "B8A"), ("T33UXP_20220105T101321_B04_10m", "B04"),
        ("NIR (B8)", "B08"), ("red edge 1", "B05"), ("Red Edge", None), ("swir16", "B11"),
        ("B12", "B12"), ("B13", None), ("band 4", None), ("", None), (None, None),
    ],
)  # fmt: skip
def test_band_names(text: str | None, expected: str | None) -> None:
    assert band_id(text) == expected


def test_six_bands_in_another_order_by_descriptions_alone(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["B08", "B11", "B02", "B03", "B05", "B04"])
    sel = resolve_bands(f, WANTED)
    assert sel.indices == [6, 4, 3, 1] and sel.source == "band names"
    assert resolve_band_order(f, WANTED) == [5, 3, 2, 0]


def test_bands_by_names_and_indices(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["nir", "swir16", "Blue", "green", "B05", "RED"])
    assert resolve_bands(f, WANTED, "B04,B03,B02,B08").indices == [6, 4, 3, 1]
    assert resolve_bands(f, WANTED, "red, green , blue,nir").indices == [6, 4, 3, 1]
    assert resolve_bands(f, WANTED, "6,4,3,1").indices == [6, 4, 3, 1]
    assert resolve_bands(f, WANTED, [6, "B03", 3, "NIR"]).indices == [6, 4, 3, 1]
    # a description the name rules do not know matches exactly
    g = _file(tmp_path / "g.tif", ["r", "g", "b", "mynir", "x"])
    assert resolve_bands(g, WANTED, "1,2,3,mynir").indices == [1, 2, 3, 4]


def test_band_metadata_and_wavelengths(tmp_path: Path) -> None:
    """BANDNAME metadata (GDAL's Sentinel-2 driver) and WAVELENGTH tags identify bands."""
    f = _file(
        tmp_path / "s.tif",
        [None] * 5,
        [{"BANDNAME": "B8"}, {"WAVELENGTH": "560", "WAVELENGTH_UNIT": "nm"},
         {"BANDNAME": "B4"}, {"WAVELENGTH": "0.49", "WAVELENGTH_UNIT": "um"}, {}],
    )  # fmt: skip
    assert resolve_bands(f, WANTED).indices == [3, 2, 4, 1]


def test_four_unnamed_bands_are_taken_in_order(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", [None] * 4)
    sel = resolve_bands(f, WANTED)
    assert sel.indices == [1, 2, 3, 4] and sel.source == "file order"
    assert resolve_band_order(f, WANTED) is None  # the cache fingerprint stays as it was
    # names in the right order are the same file order
    assert resolve_band_order(_file(tmp_path / "n.tif", WANTED), WANTED) is None


def test_b8a_is_not_nir(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["B02", "B03", "B04", "B8A", "B11"])
    with pytest.raises(DataError, match=r"s.tif: has B8A .*no B08.*--bands"):
        resolve_bands(f, WANTED)
    assert resolve_bands(f, WANTED, "B04,B03,B02,B8A").indices == [3, 2, 1, 4]
    g = _file(tmp_path / "g.tif", ["B04", "B03", "B02", "B8A"])  # four bands: no file order
    with pytest.raises(DataError, match="B8A"):
        resolve_bands(g, WANTED)


def test_contradicting_names_are_refused(tmp_path: Path) -> None:
    """Four bands whose names say they are not R, G, B, NIR are never taken in file order."""
    f = _file(tmp_path / "s.tif", ["B02", "B03", "B04", "B11"])
    with pytest.raises(DataError, match=r"s.tif: bands look like B02, B03, B04, B11.*--bands"):
        resolve_bands(f, WANTED)


def test_errors_name_the_file_and_its_bands(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["B02", "B03", "B04"])
    with pytest.raises(DataError, match=r"s.tif: has 3 bands \(B02, B03, B04\), the model expects"):
        resolve_bands(f, WANTED)
    with pytest.raises(DataError, match="band 5 does not exist"):
        resolve_bands(f, WANTED, "1,2,3,5")
    with pytest.raises(DataError, match="no band is B08"):
        resolve_bands(f, WANTED, "B04,B03,B02,B08")
    with pytest.raises(ConfigError, match="gives 3 bands, the model takes 4"):
        resolve_bands(f, WANTED, "1,2,3")
    twice = _file(tmp_path / "t.tif", ["B04", "B04", "B03", "B02", "B08"])
    with pytest.raises(DataError, match="bands 1, 2 are all B04"):
        resolve_bands(twice, WANTED, "B04,B03,B02,B08")


def test_parse_band_spec() -> None:
    assert parse_band_spec("B04, 3 ,nir") == ["B04", 3, "nir"]
    for bad in ("1,,2", "0,1,2,3", ""):
        with pytest.raises(ConfigError):
            parse_band_spec(bad)


def test_info_is_read_once(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["B08", "B04", "B03", "B02"])
    info = raster_info(f)
    assert resolve_bands(info, WANTED).indices == [2, 3, 4, 1]


def test_other_band_names_given_exactly(tmp_path: Path) -> None:
    f = _file(tmp_path / "s.tif", ["x", "band2", "band1"])
    assert resolve_bands(f, ["band1", "band2"]).indices == [3, 2]

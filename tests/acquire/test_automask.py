"""First PV masks from thresholds, and acquire + automask as a dataset ``check`` accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform

from pvdetect.acquire.automask import AutomaskParams, automask_array
from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.errors import ConfigError

from .conftest import CRS_UTM, X0, Y0
from .stac_server import TestServer


def _image(pv: np.ndarray, *, red: float, nir: float) -> np.ndarray:
    """A [4, H, W] Red, Green, Blue, NIR image: grass, with ``pv`` pixels of the given values."""
    h, w = pv.shape
    img = np.empty((4, h, w), np.float32)
    img[0], img[1], img[2], img[3] = 600, 800, 400, 2800  # green vegetation, NDVI 0.65
    img[0][pv], img[1][pv], img[2][pv], img[3][pv] = red, 850, 660, nir
    return img


def test_thresholds_pick_dry_season_pv_and_leave_water_and_vegetation() -> None:
    pv = np.zeros((40, 40), bool)
    pv[5:15, 5:20] = True  # a plant: red 1040, NIR 1130 (REFLECTANCE.md medians), NDVI 0.04
    img = _image(pv, red=1043, nir=1129)
    water = np.zeros_like(pv)
    water[25:35, 25:35] = True  # dark and low NIR, like PV for NIR alone
    img[0][water], img[3][water] = 300, 250
    shade = np.zeros_like(pv)
    shade[25:35, 2:12] = True  # dark vegetation: NIR and red like PV, NDVI 0.30
    img[0][shade], img[3][shade] = 800, 1500
    valid = np.ones_like(pv)
    valid[0, :] = False
    mask = automask_array(img, valid, AutomaskParams())
    assert mask.dtype == np.uint8
    assert (mask[pv & valid] == 1).all() and (mask[~pv & valid] == 0).all()
    assert (mask[0] == 255).all()
    # NIR alone (the prototype) would have taken the water and the dark vegetation too
    nir_only = automask_array(img, valid, AutomaskParams(ndvi_max=1.0, red_min=0))
    assert (nir_only[water] == 1).all() and (nir_only[shade] == 1).all()
    assert (automask_array(img, valid, AutomaskParams(ndvi_max=1.0))[shade] == 1).all()


def test_small_regions_are_dropped_and_options_checked() -> None:
    pv = np.zeros((30, 30), bool)
    pv[2:12, 2:12] = True
    pv[20, 20] = pv[20, 21] = True  # two stray pixels
    img = _image(pv, red=1000, nir=1100)
    mask = automask_array(img, np.ones_like(pv), AutomaskParams(min_pixels=25))
    assert mask.sum() == 100
    mask = automask_array(img, np.ones_like(pv), AutomaskParams(min_pixels=0))
    assert mask.sum() == 102
    with pytest.raises(ConfigError, match="--ndvi-max"):
        AutomaskParams(ndvi_max=2.0)
    with pytest.raises(ConfigError, match="--min-pixels"):
        AutomaskParams(min_pixels=-1)


def test_automask_files_keep_the_grid_and_hand_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pv = np.zeros((32, 32), bool)
    pv[8:20, 8:24] = True
    img = _image(pv, red=1050, nir=1150)[[3, 0, 1, 2]]  # stored NIR, Red, Green, Blue
    img[:, :2, :] = -9999
    transform = Affine(10, 0, 500000, 0, -10, 8200000)
    image = tmp_path / "images" / "site_1.tif"
    write_raster(
        image,
        img.astype(np.int16),
        crs="EPSG:32723",
        transform=transform,
        descriptions=("NIR", "Red", "Green", "Blue"),
    )
    assert main(["automask", str(tmp_path / "images"), "--out", str(tmp_path)]) == 0
    mask_path = tmp_path / "masks" / "site_1.tif"
    with rasterio.open(mask_path) as ds:
        mask = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.transform == transform and ds.crs.to_epsg() == 32723
    assert (mask[:2] == 255).all()
    assert (mask[2:][pv[2:]] == 1).all() and mask[2:][~pv[2:]].max() == 0
    # a hand-corrected mask is kept on a rerun, replaced only with --overwrite
    with rasterio.open(mask_path, "r+") as ds:
        ds.write(np.zeros((1, 32, 32), np.uint8))
    assert main(["automask", str(image), "--out", str(tmp_path)]) == 0
    assert "kept" in capsys.readouterr().out
    with rasterio.open(mask_path) as ds:
        assert ds.read(1).max() == 0
    assert main(["automask", str(image), "--out", str(tmp_path), "--overwrite"]) == 0
    with rasterio.open(mask_path) as ds:
        assert ds.read(1)[pv].min() == 1
    assert main(["automask", str(tmp_path / "nope.tif"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pvdetect automask: error: ") and "nope.tif: file not found" in err


def test_acquired_chips_and_automasks_are_a_dataset_check_accepts(
    stac: TestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (col, row) in {"plantA": (300, 300), "plantB": (700, 640)}.items():
        x, y = X0 + col * 10 + 5, Y0 - row * 10 - 5
        lons, lats = warp_transform(CRS_UTM, "EPSG:4326", [x], [y])
        args = [
            "acquire", "--catalog", stac.stac_url, "--collection", "S2-TEST",
            "--point", f"{lons[0]:.8f},{lats[0]:.8f}", "--start", "2023-07-01",
            "--end", "2023-07-31", "--out", str(tmp_path), "--chips", "3",
            "--chip-size", "32", "--name", name,
        ]  # fmt: skip
        assert main(args) == 0
    assert main(["automask", str(tmp_path / "images"), "--out", str(tmp_path)]) == 0
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert images == sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert len(images) == 6
    capsys.readouterr()
    assert main(["check", str(tmp_path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "layout: folders" in out and "chips: 6" in out and "result: ok" in out

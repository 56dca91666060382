"""Tests of pvdetect.synth.scene: large scenes written block by block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS

from pvdetect.data.raster import DEFAULT_NODATA, read_raster
from pvdetect.errors import ConfigError
from pvdetect.synth.scene import MASK_NODATA, generate_scene


def test_scene_odd_size_and_no_seams(tmp_path: Path) -> None:
    """Block-wise rendering must not depend on the block size (no seams at block borders)."""
    arrays = []
    for bs in (512, 128, 77):
        s = generate_scene(
            tmp_path / f"s{bs}.tif",
            tmp_path / f"s{bs}_mask.tif",
            300,
            seed=2,
            region="temperate",
            block_size=bs,
        )
        img, info = read_raster(s.image)
        mask, minfo = read_raster(s.mask)
        assert img.shape == (4, 300, 300) and mask.shape == (1, 300, 300)
        assert minfo.dtype == "uint8" and minfo.nodata == MASK_NODATA
        assert info.crs == CRS.from_epsg(32633)
        arrays.append((img, mask))
    for img, mask in arrays[1:]:
        assert img.tobytes() == arrays[0][0].tobytes()
        assert mask.tobytes() == arrays[0][1].tobytes()
    img, mask = arrays[0]
    invalid = (img == DEFAULT_NODATA).any(axis=0)
    assert invalid.any() and not invalid.all()
    assert ((mask[0] == MASK_NODATA) == invalid).all()
    assert set(np.unique(mask)) <= {0, 1, MASK_NODATA}
    assert 0 < s.pv_fraction < 0.3 and s.plants >= 1
    # no seam: the step across a block border is like any other step between neighbours
    band = img[3]
    valid_rows = ~invalid[:, :-1] & ~invalid[:, 1:]
    steps = np.abs(np.diff(band, axis=1))
    assert steps[:, 76][valid_rows[:, 76]].mean() < 3 * steps[valid_rows].mean()


def test_bad_region_and_sizes_are_config_errors(tmp_path: Path) -> None:
    paths = (tmp_path / "s.tif", tmp_path / "m.tif")
    with pytest.raises(ConfigError, match="unknown region 'arctic'"):
        generate_scene(*paths, 64, seed=0, region="arctic")
    with pytest.raises(ConfigError, match="at least 16"):
        generate_scene(*paths, 8, seed=0)
    assert not list(tmp_path.iterdir())

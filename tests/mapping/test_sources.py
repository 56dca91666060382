"""Local scenes on a tile's grid: stored values become reflectance x 10000 scene by scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from pvdetect.mapping.grid import Tile
from pvdetect.mapping.sources import LocalScenes

BANDS = ("Red", "Green", "Blue", "NIR")


def _offset_copy(src: Path, dst: Path, offset: float) -> Path:
    """``src`` stored as value - offset (uint16 DN) with a GDAL band offset of ``offset``."""
    with rasterio.open(src) as ds:
        data, profile, names = ds.read(), ds.profile, ds.descriptions
    nodata = data == profile["nodata"]
    stored = np.where(nodata, 0, np.rint(data - offset)).astype(np.uint16)
    profile.update(dtype="uint16", nodata=0)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(stored)
        out.offsets = (offset,) * len(names)
        for i, n in enumerate(names, start=1):
            out.set_band_description(i, n)
    return dst


def test_gdal_offsets_applied_before_compositing(region: dict, tmp_path: Path) -> None:
    scene = Path(region["scenes"][0])  # A: zone 22, float32 reflectance
    copy = _offset_copy(scene, tmp_path / scene.name, -1000.0)
    tile = Tile(zone=22, south=True, col=638, row=1341, size_m=1280.0, res=10.0, margin=16)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    plain = LocalScenes.from_paths([scene], BANDS, 4)
    shifted = LocalScenes.from_paths([copy], BANDS, 4)
    assert shifted.scenes[0].bias == (-1000.0,) * 4 and not plain.scenes[0].gain
    with (
        rasterio.open(plain.read(tile, tmp_path / "a")) as a,
        rasterio.open(shifted.read(tile, tmp_path / "b")) as b,
    ):
        want, got = a.read(), b.read()
    valid = want[0] != -9999
    assert valid.mean() > 0.5
    np.testing.assert_allclose(got[:, valid], want[:, valid], atol=0.51)  # rounded to DN
    assert (got[:, ~valid] == -9999).all()

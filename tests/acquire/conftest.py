"""Fixtures of the acquisition tests: Sentinel-2-like COG scenes, STAC items, a live server.

The scene: three dates on one 10.24 km MGRS-like tile in UTM 23S (near Brasilia), four
10 m reflectance COGs (256 px tiles, overviews) and a 20 m scene classification per date,
with clouds, shadow, cirrus, water, dark areas and a no-data corner. Each date stores its
numbers another way: as reflectance x 10000 (date 0), with the +1000 of processing baseline
04.00 declared in ``raster:bands`` (date 1), and with the +1000 declared only by
``s2:processing_baseline`` (date 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from pvdetect.acquire.assets import ItemAssets, resolve_item
from pvdetect.acquire.grid import Grid
from pvdetect.acquire.http import RetryPolicy

from .stac_server import TestServer, serve

#: retries and backoff small enough for tests
FAST = RetryPolicy(retries=1, connect_retries=0, backoff=0.01)
CRS_UTM = CRS.from_epsg(32723)
X0, Y0 = 199980.0, 8300020.0  # multiples of 60 m, as MGRS tile corners
SIZE = 1024
TRANSFORM = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
SCL_TRANSFORM = Affine(20.0, 0.0, X0, 0.0, -20.0, Y0)
DATES = ("2023-07-05", "2023-07-15", "2023-07-25")
#: DN added to reflectance x 10000 per date, and how the item declares it
DN_OFFSETS = (0, 1000, 1000)
BAND_KEYS = {
    "bdc": ("B04", "B03", "B02", "B08", "SCL"),
    "pc": ("B04", "B03", "B02", "B08", "SCL"),
    "earth-search": ("red", "green", "blue", "nir", "scl"),
}
COMMON = ("red", "green", "blue", "nir")
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass
class Scene:
    """The files and the truth of the test scene.

    Attributes:
        root: Folder served under ``/files/``.
        reflectance: ``int16 [dates, 4, H, W]`` true reflectance x 10000.
        scl: ``uint8 [dates, H/2, W/2]`` scene classification.
        nodata: ``bool [H, W]`` pixels without data on every date (a corner).
    """

    root: Path
    reflectance: np.ndarray
    scl: np.ndarray
    nodata: np.ndarray

    def band_file(self, d: int, b: int) -> str:
        """Relative path of band ``b`` (0..3) of date ``d``."""
        return f"d{d}/{COMMON[b]}.tif"

    def scl_file(self, d: int) -> str:
        """Relative path of the SCL of date ``d``."""
        return f"d{d}/scl.tif"

    def asset_bytes(self) -> int:
        """Bytes of every asset file."""
        return sum(p.stat().st_size for p in self.root.rglob("*.tif"))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """WGS 84 bbox of the tile."""
        return transform_bounds(CRS_UTM, "EPSG:4326", X0, Y0 - SIZE * 10, X0 + SIZE * 10, Y0)


def _write_cog(path: Path, array: np.ndarray, transform: Affine, nodata: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=str(array.dtype),
        crs=CRS_UTM,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        blocksize=256,
    ) as dst:
        dst.write(array, 1)


def _scl(rng: np.random.Generator, d: int) -> np.ndarray:
    half = SIZE // 2
    scl = rng.choice(np.array([4, 5, 7, 2, 6], np.uint8), size=(half, half))
    yy, xx = np.mgrid[0:half, 0:half]
    centres = [(150, 180), (260, 300), (330, 220)]
    cy, cx = centres[d]
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 < 40**2
    scl[blob] = 9 if d == 0 else 8
    scl[((yy - cy - 45) ** 2 + (xx - cx - 30) ** 2 < 25**2) & ~blob] = 3  # its shadow
    scl[(yy // 16 + xx // 16 + d) % 23 == 0] = 10  # cirrus stripes
    scl[(yy + xx + 7 * d) % 97 == 0] = 1  # saturated pixels
    scl[(yy - 256) ** 2 + (xx - 256) ** 2 < (6 + 2 * d) ** 2] = 11  # snow (masked)
    scl[:20, :20] = 0
    return scl


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """Three dates of a Sentinel-2-like tile as COGs, and their truth."""
    root = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(7)
    refl = rng.integers(150, 4000, size=(len(DATES), 4, SIZE, SIZE)).astype(np.int16)
    nodata = np.zeros((SIZE, SIZE), bool)
    nodata[:40, :40] = True
    scl = np.stack([_scl(rng, d) for d in range(len(DATES))])
    sc = Scene(root=root, reflectance=refl, scl=scl, nodata=nodata)
    for d in range(len(DATES)):
        for b in range(4):
            dn = (refl[d, b].astype(np.int32) + DN_OFFSETS[d]).astype(np.uint16)
            dn[nodata] = 0
            _write_cog(root / sc.band_file(d, b), dn, TRANSFORM, 0)
        _write_cog(root / sc.scl_file(d), scl[d], SCL_TRANSFORM, 0)
    return sc


def make_items(
    scene: Scene, server: TestServer, style: str, collection: str = "S2-TEST"
) -> list[dict[str, Any]]:
    """STAC items of the scene's three dates in one catalog's style.

    ``bdc``: keys ``B04 B03 B02 B08 SCL``, ``eo:bands`` with names and common names.
    ``earth-search``: keys ``red green blue nir scl`` plus JPEG 2000 copies of each band that
    must not be read, ``raster:bands`` scale/offset and ``earthsearch:boa_offset_applied``.
    ``pc``: keys as BDC, no ``raster:bands``, ``s2:processing_baseline`` only.
    """
    w, s, e, n = scene.bbox
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    keys = BAND_KEYS[style]
    items = []
    for d, day in enumerate(DATES):
        props: dict[str, Any] = {"datetime": f"{day}T13:20:11Z", "eo:cloud_cover": 10.0 + d}
        assets: dict[str, Any] = {}
        for b, common in enumerate(COMMON):
            asset: dict[str, Any] = {
                "href": server.file_url(scene.band_file(d, b)),
                "type": COG_TYPE,
                "roles": ["data"],
                "eo:bands": [
                    {"name": keys[b] if style != "earth-search" else common, "common_name": common}
                ],
            }
            if style == "earth-search":
                asset["raster:bands"] = [
                    {
                        "nodata": 0,
                        "data_type": "uint16",
                        "scale": 0.0001,
                        "offset": -0.1 if d > 0 else 0.0,
                    }
                ]
                assets[f"{common}-jp2"] = {
                    "href": server.file_url(f"d{d}/{common}.jp2"),
                    "type": "image/jp2",
                    "roles": ["data"],
                    "eo:bands": [{"name": common, "common_name": common}],
                }
            elif style == "bdc" and d == 1:
                asset["raster:bands"] = [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]
            assets[keys[b]] = asset
        assets[keys[4]] = {
            "href": server.file_url(scene.scl_file(d)),
            "type": COG_TYPE,
            "roles": ["data"],
        }
        assets["thumbnail"] = {"href": server.file_url("none.png"), "roles": ["thumbnail"]}
        if style == "earth-search":
            props["s2:processing_baseline"] = "05.09" if d > 0 else "03.01"
            props["earthsearch:boa_offset_applied"] = False
        elif style == "pc" or d == 2:
            props["s2:processing_baseline"] = "05.00" if d > 0 else "03.00"
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": [],
                "id": f"{style}-{day}",
                "collection": collection,
                "bbox": [w, s, e, n],
                "geometry": geometry,
                "properties": props,
                "assets": assets,
                "links": [],
            }
        )
    return items


def collection_doc(collection: str = "S2-TEST") -> dict[str, Any]:
    """A minimal STAC collection."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection,
        "description": "test collection",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


@pytest.fixture
def stac(scene: Scene) -> Iterator[TestServer]:
    """A live server over the scene with the BDC-style items and one collection."""
    with serve(scene.root) as server:
        server.state.collections["S2-TEST"] = collection_doc()
        server.state.items = make_items(scene, server, "bdc")
        yield server


def expected_median(
    scene: Scene,
    rows: slice,
    cols: slice,
    mask_classes: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11),
    dates: tuple[int, ...] = (0, 1, 2),
) -> np.ndarray:
    """The median of the clear values of a window of the scene, computed plainly."""
    values = []
    for d in dates:
        scl10 = np.repeat(np.repeat(scene.scl[d], 2, axis=0), 2, axis=1)[rows, cols]
        clear = ~np.isin(scl10, mask_classes) & ~scene.nodata[rows, cols]
        v = scene.reflectance[d][:, rows, cols].astype(np.float64)
        v[:, ~clear] = np.nan
        values.append(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        med = np.nanmedian(np.stack(values), axis=0)
    return np.where(np.isnan(med), -9999, np.rint(med)).astype(np.int16)


def resolved_items(server: TestServer) -> list[ItemAssets]:
    """The server's items with their assets resolved."""
    return [resolve_item(pystac.Item.from_dict(d)) for d in server.state.items]


def scene_grid(col0: int, row0: int, cols: int, rows: int, res: float = 10.0) -> Grid:
    """A grid on the scene's pixels, from a column and row of the tile."""
    return Grid(CRS_UTM, Affine(res, 0, X0 + col0 * 10, 0, -res, Y0 - row0 * 10), cols, rows)


def read_all(path: Path) -> np.ndarray:
    """Every band of a raster."""
    with rasterio.open(path) as ds:
        return ds.read()

"""A job on a STAC catalog: the loopback STAC API and COG server of the acquisition tests."""

from __future__ import annotations

import numpy as np
import rasterio
from pyproj import Transformer

from tests.acquire.conftest import CRS_UTM, DATES, X0, Y0

from .helpers import wait_for


def _polygon() -> dict:
    """A diamond of 600 m across in the middle of the test tile, in WGS 84."""
    tr = Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True)
    cx, cy = X0 + 5120, Y0 - 5120
    ring = [(cx, cy + 300), (cx + 300, cy), (cx, cy - 300), (cx - 300, cy), (cx, cy + 300)]
    return {"type": "Polygon", "coordinates": [[list(tr.transform(x, y)) for x, y in ring]]}


def test_job_on_a_stac_catalog_with_a_polygon(make_client, stac, tmp_path) -> None:
    client = make_client(f"stac:{stac.stac_url}", collection="S2-TEST")
    body = {
        "area": {"type": "geojson", "geometry": _polygon()},
        "start": "2023-07-01",
        "end": "2023-07-31",
    }
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 202, r.text
    info = wait_for(client, r.json()["id"], ("done", "failed", "cancelled"), timeout=300)
    assert info["status"] == "done", info
    result = info["result"]
    assert result["dates"] == {"start": "2023-07-01", "end": "2023-07-31"}
    imagery = result["imagery"]
    assert imagery["kind"] == "catalog"
    assert [it["id"] for it in imagery["items"]] == [f"bdc-{d}" for d in DATES]
    assert result["area"]["crs"] == "EPSG:32723"
    kinds = {f["kind"]: f["name"] for f in result["files"]}
    assert kinds["composite"] == "acquire/area.tif" and kinds["sidecar"] == "acquire/area.json"
    assert kinds["area"] == "area.tif"
    assert any(stac.state.searches)  # it really asked the catalog

    folder = tmp_path / "jobs" / info["id"]
    with rasterio.open(folder / "area.tif") as ds:
        area = ds.read()
        nodata = ds.nodata
    with rasterio.open(folder / "acquire" / "area.tif") as ds:
        composite = ds.read()
    h, w = area.shape[1:]
    rows, cols = np.mgrid[0:h, 0:w]
    # the diamond: |dx| + |dy| < 30 px around the centre; the corners of the box lie outside
    centre = ((h - 1) / 2, (w - 1) / 2)
    inside = np.abs(rows - centre[0]) + np.abs(cols - centre[1]) < 28
    outside = np.abs(rows - centre[0]) + np.abs(cols - centre[1]) > 32
    assert (area[:, outside] == nodata).all()
    np.testing.assert_array_equal(area[:, inside], composite[:, inside])

    # the hand-set model: PV where NIR > 2000 at the even pixel of each 2 x 2 block
    valid = (area != nodata).all(axis=0)
    even = (area[3] > 2000) & valid
    even = even[::2, ::2].repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
    expected = np.where(valid, even, 255).astype(np.uint8)
    with rasterio.open(folder / "area_mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
    geo = client.get(f"/api/jobs/{info['id']}/files/{result['plants_geojson']}").json()
    assert len(geo["features"]) == result["plants"]
    total = sum(f["properties"]["area_ha"] for f in geo["features"])
    assert result["plants"] > 0 and abs(total - result["total_ha"]) < 1e-3

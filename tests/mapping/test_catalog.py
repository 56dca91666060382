"""``pvdetect map --catalog``: each tile's composite fetched on the workers from a STAC API on
127.0.0.1 (range requests) gives the same tiles as mapping the composite ``acquire`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import rasterio

from pvdetect import cli
from pvdetect.mapping.pieces import read_pieces
from tests.acquire.conftest import CRS_UTM, X0, Y0, scene, stac  # noqa: F401 - fixtures
from tests.acquire.stac_server import TestServer, _matches
from tests.mapping.conftest import TILE_KM

WINDOW = ["--start", "2023-07-01", "--end", "2023-07-31"]


def _bbox(grow: float = 0.0) -> str:
    """An area over the scene's east edge (its tiles east of the scene have no item), grown
    by ``grow`` metres on every side."""
    tr = pyproj.Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = X0 + 7300 - grow, Y0 - 5900 - grow, X0 + 12900 + grow, Y0 - 3700 + grow
    w, s, e, n = tr.transform_bounds(x0, y0, x1, y1)
    return f"--bbox={w},{s},{e},{n}"


def test_catalog_tiles_equal_the_acquired_composite(
    stac: TestServer,  # noqa: F811 - the fixture
    region: dict,
    cluster: str,
    tmp_path: Path,  # noqa: F811
) -> None:
    catalog = ["--catalog", stac.stac_url, "--collection", "S2-TEST", *WINDOW]
    common = [str(region["bundle"]), _bbox(), "--tile-km", TILE_KM, "--cluster", cluster]
    assert cli.main(["map", *common, "--out", str(tmp_path / "cat"), *catalog]) == 0
    searches = list(stac.state.searches)
    assert len(searches) >= 2 and sum(stac.state.bytes_served.values()) > 0  # over HTTP
    # the composite of a larger area: it holds every tile's cell and margins
    acq = ["acquire", *catalog, _bbox(grow=2000), "--name", "ref", "--out", str(tmp_path / "acq")]
    assert cli.main(acq) == 0
    ref = tmp_path / "ref"
    assert cli.main(["map", *common, "--out", str(ref), "--scenes", str(tmp_path / "acq")]) == 0

    cat = tmp_path / "cat"
    records = {p.stem: json.loads(p.read_text()) for p in (cat / "state/tiles").glob("*.json")}
    ref_records = {p.stem for p in (ref / "state/tiles").glob("*.json")}
    assert ref_records == set(records)  # the composite covers the whole area, nodata included
    # tiles east of the scene: no item in their search, predicted as nodata
    assert any(not any(_matches(it, q) for it in stac.state.items) for _, q in searches)
    empty = {t for t, r in records.items() if r["valid_share"] == 0}
    assert empty and all(records[t]["plants"] == 0 for t in empty)
    for t in ref_records:
        with (
            rasterio.open(cat / "tiles" / t / f"{t}_prob.tif") as a,
            rasterio.open(ref / "tiles" / t / f"{t}_prob.tif") as b,
        ):
            assert a.transform == b.transform and a.crs == b.crs
            np.testing.assert_array_equal(a.read(1), b.read(1))
    pa, pb = read_pieces(cat / "plants.gpkg"), read_pieces(ref / "plants.gpkg")
    assert len(pa) == len(pb) > 0
    np.testing.assert_allclose(np.sort(pa.area_m2()), np.sort(pb.area_m2()))
    state = json.loads((cat / "state" / "run.json").read_text())["identity"]
    assert state["source"]["kind"] == "catalog" and state["source"]["collection"] == "S2-TEST"

"""Known catalogs, the search through pystac-client (GET and POST paging), its failures."""

from __future__ import annotations

import copy
from datetime import date

import pytest
from pystac_client import Client

from pvdetect.acquire.catalogs import (
    KNOWN_CATALOGS,
    Catalog,
    make_signer,
    resolve_catalog,
    search_items,
)
from pvdetect.acquire.http import NetworkError
from pvdetect.acquire.signing import NoSigner, PlanetaryComputerSigner
from pvdetect.errors import ConfigError

from .conftest import FAST, Scene
from .stac_server import TestServer


def test_known_catalogs_and_urls() -> None:
    cat, coll = resolve_catalog("bdc", None)
    assert (cat.url, coll) == ("https://data.inpe.br/bdc/stac/v1", "S2-16D-2")
    cat, coll = resolve_catalog("earth-search", None)
    assert (cat.url, coll) == ("https://earth-search.aws.element84.com/v1", "sentinel-2-l2a")
    cat, coll = resolve_catalog("planetary-computer", "sentinel-2-l2a")
    assert cat.signing == "planetary-computer"
    assert isinstance(make_signer(cat, coll), PlanetaryComputerSigner)
    # the Planetary Computer's address is recognised (and signed) too
    cat, _ = resolve_catalog("https://planetarycomputer.microsoft.com/api/stac/v1/", "x")
    assert cat.name == "planetary-computer"
    cat, coll = resolve_catalog("https://stac.example.org/v1", "my-s2")
    assert (cat.name, coll) == ("url", "my-s2")
    assert isinstance(make_signer(cat, coll), NoSigner)
    with pytest.raises(ConfigError, match="--collection: needed with a catalog URL"):
        resolve_catalog("https://stac.example.org/v1", None)
    with pytest.raises(ConfigError, match="--catalog: unknown catalog 'bcd'"):
        resolve_catalog("bcd", None)
    assert set(KNOWN_CATALOGS) == {"bdc", "earth-search", "planetary-computer"}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_test_server_pages_as_pystac_client_expects(stac: TestServer, method: str) -> None:
    client = Client.open(stac.stac_url)
    search = client.search(
        collections=["S2-TEST"], bbox=[-50, -20, -40, -10], max_items=10, method=method
    )
    ids = [it.id for it in search.items()]
    assert ids == ["bdc-2023-07-05", "bdc-2023-07-15", "bdc-2023-07-25"]
    methods = [m for m, _ in stac.state.searches]
    assert methods == [method, method]  # two pages of two


def test_search_items_filters_dates_and_pages(stac: TestServer, scene: Scene) -> None:
    catalog = Catalog("url", stac.stac_url)
    res = search_items(
        catalog, "S2-TEST", scene.bbox, date(2023, 7, 10), date(2023, 7, 31), 10, FAST
    )
    assert [it.id for it in res.items] == ["bdc-2023-07-15", "bdc-2023-07-25"]
    assert res.matched == 2 and res.selection == "all"
    # the end date is included entirely
    res = search_items(catalog, "S2-TEST", scene.bbox, date(2023, 7, 5), date(2023, 7, 5), 10)
    assert [it.id for it in res.items] == ["bdc-2023-07-05"]


def test_more_items_than_wanted_keeps_the_least_cloudy(stac: TestServer, scene: Scene) -> None:
    items = copy.deepcopy(stac.state.items)
    items[0]["properties"]["eo:cloud_cover"] = 80.0
    stac.state.items = items
    res = search_items(
        Catalog("url", stac.stac_url),
        "S2-TEST",
        scene.bbox,
        date(2023, 7, 1),
        date(2023, 7, 31),
        2,
    )
    assert [it.id for it in res.items] == ["bdc-2023-07-15", "bdc-2023-07-25"]
    assert res.matched == 3 and "least eo:cloud_cover" in res.selection


def test_search_failures(stac: TestServer, scene: Scene) -> None:
    catalog = Catalog("url", stac.stac_url)
    with pytest.raises(ConfigError, match="--collection: 'S2-NOPE' not found"):
        search_items(catalog, "S2-NOPE", scene.bbox, date(2023, 7, 1), date(2023, 7, 31), 5)
    bad = Catalog("url", stac.base_url + "/nothing/")
    with pytest.raises(NetworkError, match="answered HTTP 404"):
        search_items(bad, "S2-TEST", scene.bbox, date(2023, 7, 1), date(2023, 7, 31), 5, FAST)

"""Planetary Computer signing through a SAS token endpoint (a local fake of the real API)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from pvdetect.acquire.catalogs import Catalog, make_signer
from pvdetect.acquire.http import NetworkError
from pvdetect.acquire.pipeline import acquire
from pvdetect.acquire.request import AcquireRequest
from pvdetect.acquire.signing import PC_TOKEN_URL, PlanetaryComputerSigner, SasTokenSigner

from .conftest import FAST, Scene, make_items
from .stac_server import TestServer


def test_sas_token_is_appended_cached_and_renewed(stac: TestServer) -> None:
    now = [1_000_000.0]
    stac.state.token_value = "se=2099&sig=abc"
    signer = SasTokenSigner(
        "sentinel-2-l2a", stac.base_url + "/token/{collection}", policy=FAST, clock=lambda: now[0]
    )
    assert signer.sign("https://blob/a.tif") == "https://blob/a.tif?se=2099&sig=abc"
    assert signer.sign("https://blob/b.tif?x=1") == "https://blob/b.tif?x=1&se=2099&sig=abc"
    assert signer.sign("https://blob/c.tif?sig=zzz") == "https://blob/c.tif?sig=zzz"
    assert stac.state.token_requests == ["sentinel-2-l2a"]  # one token for all
    now[0] = 4_102_444_800.0  # 2100: past msft:expiry, a new token is asked for
    signer.sign("https://blob/a.tif")
    assert stac.state.token_requests == ["sentinel-2-l2a", "sentinel-2-l2a"]


def test_token_endpoint_failure_is_a_network_error(stac: TestServer) -> None:
    signer = SasTokenSigner("x", stac.base_url + "/nothing/{collection}", policy=FAST)
    with pytest.raises(NetworkError, match=r"/nothing/x: the server answered HTTP 404"):
        signer.sign("https://blob/a.tif")


def test_planetary_computer_signer_uses_the_token_api_without_the_package(
    stac: TestServer,
) -> None:
    signer = PlanetaryComputerSigner("c1", stac.base_url + "/token/{collection}", use_package=False)
    assert signer.method == "SAS token API"
    assert signer.sign("https://blob/a.tif").endswith("?" + stac.state.token_value)
    catalog = Catalog("planetary-computer", stac.stac_url, "c1", "planetary-computer", PC_TOKEN_URL)
    assert isinstance(make_signer(catalog, "c1"), PlanetaryComputerSigner)


def test_acquisition_reads_signed_assets(stac: TestServer, scene: Scene, tmp_path: Path) -> None:
    stac.state.items = make_items(scene, stac, "pc")
    stac.state.required_token = "fake-signature"
    stac.state.token_value = "st=2024&se=2099-01-01&sig=fake-signature"
    w, s, e, n = scene.bbox
    request = AcquireRequest(
        catalog=Catalog("url", stac.stac_url),
        collection="S2-TEST",
        bbox=None,
        point=((w + e) / 2, (s + n) / 2),
        size_km=0.3,
        start=date(2023, 7, 1),
        end=date(2023, 7, 31),
        name="unsigned",
    )
    with pytest.raises(NetworkError, match="HTTP response code: 403"):
        acquire(request, tmp_path, policy=FAST)
    assert list(tmp_path.iterdir()) == []
    signed = Catalog(
        "planetary-computer",
        stac.stac_url,
        "S2-TEST",
        "planetary-computer",
        stac.base_url + "/token/{collection}",
    )
    request = AcquireRequest(**{**request.__dict__, "catalog": signed, "name": "signed"})
    result = acquire(request, tmp_path, policy=FAST)
    assert result.image.is_file() and stac.state.token_requests == ["S2-TEST"]
    doc = json.loads(result.sidecar.read_text())
    assert doc["signing"] == "SAS token API"
    assert "sig=" not in json.dumps(doc)  # no token in the sidecar

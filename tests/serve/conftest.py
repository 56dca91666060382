"""Fixtures of the serve tests: the hand-set bundle, local scenes, the STAC test server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pvdetect.serve.app import create_app
from pvdetect.serve.settings import ServeSettings
from pvdetect.serve.sources import Source, parse_source

# the acquisition tests' Sentinel-2-like scene and live STAC server, reused as they are
from tests.acquire.conftest import scene, stac  # noqa: F401

from .helpers import SCENE_SIZE, SCENE_X0, SCENE_Y0, scene_array, write_nir_bundle, write_scene


@pytest.fixture(scope="session")
def nir_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-set U-Net bundle (PV where NIR > 2000)."""
    return write_nir_bundle(tmp_path_factory.mktemp("bundle") / "nir-unet")


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``west.tif`` with the three plants, ``east.tif`` beside it without, and a mask to skip."""
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root / "west.tif")
    east = scene_array(seed=1)
    east[3] = 800.0
    write_scene(root / "east.tif", east, x0=SCENE_X0 + SCENE_SIZE * 10.0, y0=SCENE_Y0)
    write_scene(root / "west_mask.tif", scene_array()[:1])
    return root


@pytest.fixture
def make_client(tmp_path: Path, nir_bundle: Path) -> Iterator[Callable[..., TestClient]]:
    """Builds a started app's test client: ``make_client(source, **settings)``."""
    clients: list[TestClient] = []

    def make(source: str | Source, **kw) -> TestClient:
        src = (
            parse_source(source, kw.pop("collection", None)) if isinstance(source, str) else source
        )
        kw.setdefault("jobs_dir", tmp_path / "jobs")
        settings = ServeSettings(bundle=nir_bundle, source=src, device="cpu", **kw)
        client = TestClient(create_app(settings), base_url="http://127.0.0.1")
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)

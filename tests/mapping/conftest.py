"""Fixtures of the mapping tests: the region, a 2-worker Dask cluster, a reference map."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pvdetect import cli
from tests.mapping.helpers import pixel_bundle, write_scenes

TILE_KM = "1.28"  # 128 px cells at 10 m


@pytest.fixture(scope="session")
def region(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("region")
    return {"scenes": write_scenes(root / "scenes"), "bundle": pixel_bundle(root / "bundle")}


@pytest.fixture(scope="session")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes on 127.0.0.1; its address."""
    import distributed

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
        worker_dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    ) as c:
        yield c.scheduler_address


def map_args(region: dict, out: Path, *extra: str) -> list[str]:
    return [
        "map", str(region["bundle"]), "--out", str(out), "--scenes",
        *(str(p) for p in region["scenes"]), "--tile-km", TILE_KM, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def reference(region: dict, cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted map of the region."""
    out = tmp_path_factory.mktemp("ref") / "map"
    assert cli.main(map_args(region, out, "--cluster", cluster)) == 0
    return out

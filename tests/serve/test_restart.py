"""A server killed (SIGKILL) during a job and started again: the job is not done, new jobs run;
and raw requests (no client-side folding of '..') to a live server."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import httpx
import pytest

from pvdetect.serve.jobs import RESTART_MESSAGE

from .helpers import live_server, scene_lonlat, wait_for


def _args(nir_bundle: Path, scenes_dir: Path, jobs: Path, *extra: str) -> list[str]:
    return [
        "--bundle",
        str(nir_bundle),
        "--source",
        f"scenes:{scenes_dir}",
        "--jobs-dir",
        str(jobs),
        "--device",
        "cpu",
        *extra,
    ]


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)  # sent as it is
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_killed_server_never_reports_the_job_done(
    nir_bundle: Path, scenes_dir: Path, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    lon, lat = scene_lonlat(80, 100)
    area = {"type": "point", "lon": lon, "lat": lat, "size_km": 1.6}
    args = _args(nir_bundle, scenes_dir, jobs)
    with live_server([*args, "--row-delay", "5"], tmp_path / "first.log") as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        job_id = client.post("/api/jobs", json={"area": area}).json()["id"]
        deadline = time.monotonic() + 120
        while True:
            info = client.get(f"/api/jobs/{job_id}").json()
            p = info["progress"] or {}
            if p.get("stage") == "predicting" and p.get("done"):
                break
            assert info["status"] in ("queued", "running") and time.monotonic() < deadline, info
            time.sleep(0.1)
        assert (p["done"], p["total"]) == (3, 9)
        server.kill()
    state = json.loads((jobs / job_id / "job.json").read_text())
    assert state["status"] == "running"  # as the killed server left it
    assert not (jobs / job_id / "manifest.json").exists()

    with live_server(args, tmp_path / "second.log") as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        info = client.get(f"/api/jobs/{job_id}").json()
        assert info["status"] == "failed" and info["error"] == RESTART_MESSAGE
        assert info["result"] is None
        assert client.get(f"/api/jobs/{job_id}/files/area.tif").status_code == 409
        w, s = scene_lonlat(70, 20)  # around plant A only: two tiles
        e, n = scene_lonlat(10, 100)
        box = {"type": "bbox", "west": w, "south": s, "east": e, "north": n}
        new_id = client.post("/api/jobs", json={"area": box}).json()["id"]
        info = wait_for(client, new_id, ("done", "failed", "cancelled"), timeout=300)
        assert info["status"] == "done", info
        assert info["result"]["plants"] == 1
        assert info["result"]["total_ha"] == pytest.approx(24.0, rel=0.005)
        listed = {j["id"]: j["status"] for j in client.get("/api/jobs").json()["jobs"]}
        assert listed == {job_id: "failed", new_id: "done"}

        base = f"/api/jobs/{new_id}/files/"
        assert _raw_get(server.port, base + "report.html")[0] == 200
        for path in (
            base + "../job.json",
            base + "layers/../../" + job_id + "/job.json",
            base + "../../../../etc/passwd",
            base + "..%2f..%2fetc%2fpasswd",
        ):
            status, body = _raw_get(server.port, path)
            assert status == 400, (path, status, body)
            assert b"root:" not in body

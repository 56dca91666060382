"""Tests of pvdetect.serve.app with FastAPI's test client: job life cycle, files, cancel, queue,
validation (422), body size (413), tokens (401), download paths, the page and the API docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio

from .helpers import PLANTS, SCENE_X0, SCENE_Y0, scene_lonlat, wait_for

FINAL = ("done", "failed", "cancelled")
#: the life-cycle area: 1.6 km around the corner of scene pixel (row 80, col 100), so its grid
#: is scene rows 0-160 and columns 20-180, holding the three plants whole
CENTRE = scene_lonlat(80, 100)
AREA = {"type": "point", "lon": CENTRE[0], "lat": CENTRE[1], "size_km": 1.6}


def _scenes(scenes_dir: Path) -> str:
    return f"scenes:{scenes_dir}"


def _expected_mask() -> np.ndarray:
    mask = np.zeros((160, 160), np.uint8)
    for r, c, h, w in PLANTS:
        mask[r : r + h, c - 20 : c - 20 + w] = 1
    return mask


@pytest.fixture(scope="module")
def done_job(tmp_path_factory: pytest.TempPathFactory, nir_bundle: Path, scenes_dir: Path):
    """One finished job on the scenes source: (client, job JSON, jobs folder)."""
    from fastapi.testclient import TestClient

    from pvdetect.serve.app import create_app
    from pvdetect.serve.settings import ServeSettings
    from pvdetect.serve.sources import parse_source

    jobs = tmp_path_factory.mktemp("jobs")
    settings = ServeSettings(
        bundle=nir_bundle, source=parse_source(_scenes(scenes_dir)), jobs_dir=jobs, device="cpu"
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        r = client.post("/api/jobs", json={"area": AREA, "label": "three plants"})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/api/jobs/{r.json()['id']}"
        info = wait_for(client, r.json()["id"], FINAL, timeout=300)
        yield client, info, jobs


def test_job_finds_the_known_plants(done_job) -> None:
    client, info, jobs = done_job
    assert info["status"] == "done", info
    assert info["error"] is None and info["progress"] is None
    result = info["result"]
    assert result["plants"] == 3
    assert result["total_ha"] == pytest.approx(39.0, rel=0.005)
    assert result["area"]["width_px"] == 160 and result["area"]["height_px"] == 160
    assert result["area"]["crs"] == "EPSG:32633"
    assert result["imagery"] == {
        "kind": "scenes",
        "label": result["imagery"]["label"],
        "scenes": ["west.tif"],
    }
    folder = jobs / info["id"]
    with rasterio.open(folder / "area_mask.tif") as ds:
        assert ds.transform.c == SCENE_X0 + 200 and ds.transform.f == SCENE_Y0
        assert ds.crs.to_epsg() == 32633
        mask = ds.read(1)
    np.testing.assert_array_equal(mask, _expected_mask())
    meta, _, _, fields = pyogrio.raw.read(folder / "area_plants.gpkg", layer="plants")
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert sorted(round(a, 1) for a in columns["area_ha"]) == [6.0, 9.0, 24.0]
    assert (columns["mean_prob"] > 0.95).all()
    assert meta["crs"] == "EPSG:32633"


def test_job_files_are_listed_and_downloadable(done_job) -> None:
    client, info, jobs = done_job
    result = info["result"]
    kinds = {f["kind"]: f["name"] for f in result["files"]}
    assert kinds == {
        "area": "area.tif",
        "probability": "area_prob.tif",
        "mask": "area_mask.tif",
        "plants": "area_plants.gpkg",
        "plants_geojson": "area_plants.geojson",
        "overlay": "area_overlay.png",
        "report": "report.html",
    }
    folder = jobs / info["id"]
    for f in result["files"]:
        r = client.get(f"/api/jobs/{info['id']}/files/{f['name']}")
        assert r.status_code == 200, f
        assert r.content == (folder / f["name"]).read_bytes()
        assert len(r.content) == f["bytes"]
    geo = client.get(f"/api/jobs/{info['id']}/files/{result['plants_geojson']}")
    assert geo.headers["content-type"] == "application/geo+json"
    features = geo.json()["features"]
    assert sorted(round(f["properties"]["area_ha"], 1) for f in features) == [6.0, 9.0, 24.0]
    lon, lat = features[0]["geometry"]["coordinates"][0][0]
    assert abs(lon - CENTRE[0]) < 0.05 and abs(lat - CENTRE[1]) < 0.05  # WGS 84
    for layer in result["layers"].values():
        png = client.get(f"/api/jobs/{info['id']}/files/{layer['name']}")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        (s, w), (n, e) = layer["bounds"]
        assert s < CENTRE[1] < n and w < CENTRE[0] < e
        assert (n - s) * 111 == pytest.approx(1.6, rel=0.02)


def test_job_report_is_self_contained(done_job) -> None:
    client, info, _ = done_job
    html = client.get(f"/api/jobs/{info['id']}/files/report.html").text
    assert "three plants" in html
    total = float(re.search(r"total area</td><td>([0-9.]+) ha", html)[1])
    assert total == pytest.approx(39.0, rel=0.005)
    assert "data:image/png;base64," in html
    assert "west.tif" in html and "EPSG:32633" in html
    areas = [
        float(a) for a in re.findall(r'<tr><td class="n">\d+</td><td class="n">([0-9.]+)', html)
    ]
    assert areas == pytest.approx([24.0, 9.0, 6.0], rel=0.005)  # the largest first
    assert 'src="http' not in html and 'href="http' not in html  # nothing fetched from outside


def test_job_list_and_state_on_disk(done_job) -> None:
    client, info, jobs = done_job
    listed = client.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [info["id"]]
    assert listed[0]["result"]["plants"] == 3
    state = json.loads((jobs / info["id"] / "job.json").read_text())
    assert state["status"] == "done" and "result" not in state
    manifest = json.loads((jobs / info["id"] / "manifest.json").read_text())
    assert manifest["plants"] == 3 and manifest["format"] == "pvdetect-serve-job/1"
    assert not list((jobs / info["id"]).glob(".*")), "temporary files left behind"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("..%2F..%2Fjob.json", 400),
        ("%2e%2e/job.json", 400),
        ("layers%2Fmask.png", 400),
        ("..%5Cjob.json", 400),
        (".hidden", 400),
        ("nothere.tif", 404),
        ("layers", 404),
    ],
)
def test_download_paths_are_refused(done_job, name: str, status: int) -> None:
    """Literal '..' parts (which HTTP clients fold before sending) in test_security and
    test_restart (raw requests to a live server)."""
    client, info, _ = done_job
    r = client.get(f"/api/jobs/{info['id']}/files/{name}")
    assert r.status_code == status, r.text
    assert "message" in r.json()


def test_download_through_a_symlink_leaving_the_job_is_refused(done_job, tmp_path) -> None:
    client, info, jobs = done_job
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    link = jobs / info["id"] / "leak.txt"
    link.symlink_to(secret)
    try:
        r = client.get(f"/api/jobs/{info['id']}/files/leak.txt")
        assert r.status_code == 403
        assert "not for download" not in r.text
    finally:
        link.unlink()


def test_unknown_and_malformed_job_ids(done_job) -> None:
    client, _, _ = done_job
    assert client.get("/api/jobs/AAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert client.get("/api/jobs/..").status_code == 404
    assert client.get("/api/jobs/a$b").status_code == 404
    assert client.post("/api/jobs/AAAAAAAAAAAAAAAAAAAA/cancel").status_code == 404


def test_a_finished_job_cannot_be_cancelled(done_job) -> None:
    client, info, _ = done_job
    r = client.post(f"/api/jobs/{info['id']}/cancel")
    assert r.status_code == 409 and "done" in r.json()["message"]


def test_page_docs_and_openapi(done_job) -> None:
    client, _, _ = done_job
    page = client.get("/")
    assert page.status_code == 200 and "static/vendor/leaflet/leaflet.js" in page.text
    docs = client.get("/docs")
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel"} <= set(schema["paths"])
    assert "JobRequest" in schema["components"]["schemas"]
    assert client.get("/static/app.js").status_code == 200


def test_source_describes_the_scenes(done_job) -> None:
    client, _, _ = done_job
    src = client.get("/api/source").json()
    assert src["kind"] == "scenes" and src["needs_dates"] is False
    assert [s["name"] for s in src["scenes"]] == ["east.tif", "west.tif"]
    assert src["model"]["arch"] == "unet" and src["token_required"] is False


# ------------------------------------------------------------------ validation


BAD = [
    ({"area": {"type": "point", "lon": 200, "lat": 10, "size_km": 1}}, "area.lon", "200"),
    ({"area": {"type": "point", "lon": 10, "lat": -91, "size_km": 1}}, "area.lat", "-91"),
    ({"area": {"type": "point", "lon": 10, "lat": 10, "size_km": 0}}, "area.size_km", "> 0"),
    ({"area": {"type": "point", "lon": 10, "lat": 10}}, "area", "size_km"),
    ({"area": {"type": "point", "lon": 10, "lat": 89.99, "size_km": 5}}, "area", "pole"),
    (
        {"area": {"type": "bbox", "west": 2, "south": 1, "east": 1, "north": 3}},
        "area",
        "west 2 must be below east 1",
    ),
    (
        {"area": {"type": "bbox", "west": 1, "south": 3, "east": 2, "north": 1}},
        "area",
        "south 3 must be below north 1",
    ),
    (
        {"area": {"type": "geojson", "geometry": {"type": "Point", "coordinates": [1, 2]}}},
        "area.geometry",
        "Polygon or MultiPolygon",
    ),
    (
        {
            "area": {
                "type": "geojson",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 1]]]},
            }
        },
        "area.geometry",
        "is not valid (Self-intersection",
    ),
    (
        {"area": {"type": "geojson", "geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}}},
        "area.geometry",
        "not a valid GeoJSON Polygon",
    ),
    (
        {
            "area": {
                "type": "geojson",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 95], [1, 0], [0, 0]]]},
            }
        },
        "area.geometry",
        "latitudes must lie in [-90, 90]",
    ),
    ({"area": {"type": "circle"}}, "area", "point"),
    (
        {
            "area": {"type": "point", "lon": 1, "lat": 1, "size_km": 1},
            "start": "2023-02-30",
            "end": "2023-03-01",
        },
        "start",
        "date",
    ),
    (
        {
            "area": {"type": "point", "lon": 1, "lat": 1, "size_km": 1},
            "start": "2023-04-01",
            "end": "2023-03-01",
        },
        "body",
        "after end",
    ),
    ({"area": {"type": "point", "lon": 1, "lat": 1, "size_km": 1}, "bogus": 1}, "bogus", "xtra"),
]


@pytest.mark.parametrize(("body", "where", "text"), BAD)
def test_malformed_requests_get_422_saying_what_is_wrong(
    make_client, scenes_dir: Path, body: dict, where: str, text: str
) -> None:
    client = make_client(_scenes(scenes_dir))
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert message.startswith(where) and text in message, message


def test_refused_areas_get_422(make_client, scenes_dir: Path, tmp_path: Path) -> None:
    client = make_client(_scenes(scenes_dir), max_km=1.0)
    r = client.post("/api/jobs", json={"area": AREA})
    assert r.status_code == 422
    assert r.json()["message"] == (
        "area: the area is 1.6 x 1.6 km; this server takes at most 1 x 1 km"
    )
    far = {"type": "point", "lon": -40.0, "lat": -10.0, "size_km": 0.5}
    r = client.post("/api/jobs", json={"area": far})
    assert r.status_code == 422 and "no scene" in r.json()["message"]
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def test_a_catalog_source_needs_dates(make_client, stac) -> None:
    client = make_client(f"stac:{stac.stac_url}", collection="S2-TEST")
    r = client.post("/api/jobs", json={"area": AREA})
    assert r.status_code == 422 and r.json()["message"].startswith("start: a catalog source")
    assert client.get("/api/source").json()["needs_dates"] is True


def test_large_bodies_get_413(make_client, scenes_dir: Path) -> None:
    client = make_client(_scenes(scenes_dir), max_body=2000)
    ring = [[0.001 * i, 0.0] for i in range(400)] + [[0.0, 0.1], [0.0, 0.0]]
    r = client.post(
        "/api/jobs",
        json={"area": {"type": "geojson", "geometry": {"type": "Polygon", "coordinates": [ring]}}},
    )
    assert r.status_code == 413 and "larger than 2000 bytes" in r.json()["message"]
    chunks = (b"x" * 1000 for _ in range(5))  # no Content-Length: counted as it streams
    r = client.post("/api/jobs", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


# ------------------------------------------------------------------ tokens and hosts


def test_token_is_required_on_every_api_call(make_client, scenes_dir: Path) -> None:
    token = "s3cret-token-for-the-tests"
    client = make_client(_scenes(scenes_dir), token=token, host="0.0.0.0")
    paths = ["/api/source", "/api/jobs", "/api/jobs/AAAAAAAAAAAAAAAAAAAA"]
    for path in paths:
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "needs its token" in r.json()["message"]
        r = client.get(path, headers={"Authorization": "Bearer wrong-token-wrong-token"})
        assert r.status_code == 401 and r.json()["message"] == "wrong token"
        r = client.get(path, headers={"Authorization": f"Basic {token}"})
        assert r.status_code == 401
    good = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/source", headers=good).status_code == 200
    assert client.get("/api/jobs/AAAAAAAAAAAAAAAAAAAA", headers=good).status_code == 404
    r = client.post("/api/jobs", json={"area": {"type": "circle"}})
    assert r.status_code == 401  # the token is checked before the body
    r = client.get("/api/jobs/AAAAAAAAAAAAAAAAAAAA/files/area.tif")
    assert r.status_code == 401
    assert client.get("/").status_code == 200  # the page holds no data


def test_loopback_server_answers_only_loopback_host_names(make_client, scenes_dir: Path) -> None:
    client = make_client(_scenes(scenes_dir))
    assert client.get("/api/source").status_code == 200
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert client.get("/api/source", headers={"Host": host}).status_code == 200, host
    r = client.get("/api/source", headers={"Host": "attacker.example:8000"})
    assert r.status_code == 400


# ------------------------------------------------------------------ queue and cancel


def test_queue_full_cancel_queued_and_running(make_client, scenes_dir: Path, tmp_path) -> None:
    client = make_client(_scenes(scenes_dir), queue=1, row_delay=30.0)
    small = {"area": {**AREA, "size_km": 0.6}}
    running = client.post("/api/jobs", json=small).json()["id"]
    wait_for(client, running, ("running",))
    queued = client.post("/api/jobs", json=small)
    assert queued.status_code == 202
    full = client.post("/api/jobs", json=small)
    assert full.status_code == 429 and "queue is full" in full.json()["message"]
    assert full.headers["retry-after"] == "30"
    r = client.post(f"/api/jobs/{queued.json()['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    again = client.post("/api/jobs", json=small)  # room again
    assert again.status_code == 202
    client.post(f"/api/jobs/{again.json()['id']}/cancel")
    info = wait_for(client, running, ("running",))
    while not (
        info["progress"] and info["progress"]["stage"] == "predicting" and info["progress"]["done"]
    ):
        info = wait_for(client, running, ("running",))
    assert info["progress"]["total"] == 1 and info["progress"]["unit"] == "tiles"
    r = client.post(f"/api/jobs/{running}/cancel")
    assert r.status_code == 202 and "cancelling" in r.json()["progress"]["message"]
    info = wait_for(client, running, FINAL, timeout=30)  # not the 30 s of the row delay
    assert info["status"] == "cancelled" and info["result"] is None
    folder = tmp_path / "jobs" / running
    assert not (folder / "manifest.json").exists()
    assert not (folder / "area_mask.tif").exists()
    assert client.get(f"/api/jobs/{running}/files/area.tif").status_code == 409
    statuses = {j["id"]: j["status"] for j in client.get("/api/jobs").json()["jobs"]}
    assert statuses[queued.json()["id"]] == "cancelled"

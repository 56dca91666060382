"""The page in a real browser: Debian's Chromium driven by Playwright, against a live server.

Skipped here when Chromium or Playwright is missing; under CI (CI=true) that is a failure.
The screenshot is kept as an artefact (in tmp_path, and in $PVDETECT_ARTIFACTS when set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from pvdetect.serve.app import STATIC

from .helpers import live_server, scene_lonlat

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token-0123456789"


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not (STATIC / "vendor" / "leaflet" / "leaflet.js").is_file():
        missing.append("the page's Leaflet files (run make)")
    if missing:
        text = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(text)
        pytest.skip(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, nir_bundle: Path, scenes_dir: Path):
    """One live server with a token for the tests of this module."""
    _need_browser()
    root = tmp_path_factory.mktemp("browser")
    args = [
        "--bundle",
        str(nir_bundle),
        "--source",
        f"scenes:{scenes_dir}",
        "--jobs-dir",
        str(root / "jobs"),
        "--device",
        "cpu",
        "--token",
        TOKEN,
    ]
    with live_server(args, root / "server.log") as live:
        yield live


def _click_latlng(page, lat: float, lon: float) -> None:
    x, y = page.evaluate(
        "([lat, lon]) => { const p = window.pvdetect.map.latLngToContainerPoint([lat, lon]);"
        " return [p.x, p.y]; }",
        [lat, lon],
    )
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def test_pick_a_point_run_a_job_see_the_plants(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    shot = tmp_path / "serve-page.png"
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 860},
            accept_downloads=True,
        )
        try:
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server.url}/?token={TOKEN}")
            page.wait_for_function("window.pvdetect && window.pvdetect.state.source")
            assert "token" not in page.url  # dropped from the address once kept
            assert page.locator("#token-box").is_hidden()
            page.fill("#width-km", "1.6")
            page.fill("#height-km", "1.6")
            lon, lat = scene_lonlat(80, 100)
            _click_latlng(page, lat, lon)
            assert float(page.input_value("#lon")) == pytest.approx(lon, abs=2e-4)
            assert float(page.input_value("#lat")) == pytest.approx(lat, abs=2e-4)
            page.click("#run")
            page.wait_for_selector("#stage", state="visible")
            rows = page.locator("#plants tbody tr")
            rows.nth(2).wait_for(timeout=240_000)
            assert rows.count() == 3
            assert page.locator("#totals").inner_text().startswith("3 plant(s), 39.0")

            # the imagery and the mask are shown as image layers, loaded with the token
            images = page.locator("img.leaflet-image-layer")
            assert images.count() == 2
            page.wait_for_function(
                "[...document.querySelectorAll('img.leaflet-image-layer')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            for i in range(2):
                assert images.nth(i).is_visible()
            assert page.locator(".leaflet-overlay-pane path.pv-plant").count() == 3

            # a plant's popup: click the middle of the largest plant on the map
            centre = page.evaluate(
                "(() => { const ps = window.pvdetect.state.plants;"
                " const p = ps.reduce((a, b) => (a.area_ha > b.area_ha ? a : b));"
                " const c = p._layer.getBounds().getCenter(); return [c.lat, c.lng]; })()"
            )
            _click_latlng(page, *centre)
            popup = page.locator(".leaflet-popup-content")
            popup.wait_for()
            text = popup.inner_text()
            assert re.search(r"Area: 24\.0\d ha", text), text
            assert re.search(r"Mean probability: 0\.9\d\d", text), text

            # the table sorts; a row opens its plant's popup
            first = rows.nth(0).locator("td").nth(1)
            assert float(first.inner_text()) == pytest.approx(24.0, abs=0.1)
            page.click("#plants th button[data-key=area_ha]")
            assert float(rows.nth(0).locator("td").nth(1).inner_text()) == pytest.approx(
                6.0, abs=0.1
            )
            rows.nth(0).click()
            page.wait_for_function(
                "document.querySelector('.leaflet-popup-content .area').textContent"
                ".startsWith('6.0')"
            )

            # a download, fetched with the token
            with page.expect_download() as dl:
                page.click("#downloads button[data-name='area_plants.geojson']")
            data = json.loads(Path(dl.value.path()).read_text())
            assert len(data["features"]) == 3
            assert page.locator("#jobs li .status.done").count() == 1
            page.screenshot(path=str(shot))
        finally:
            ctx.close()
    assert errors == []
    if os.environ.get("PVDETECT_ARTIFACTS"):
        dest = Path(os.environ["PVDETECT_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)


def test_the_page_asks_for_the_token(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        try:
            page = ctx.new_page()
            page.goto(server.url + "/")
            page.locator("#token-box").wait_for(state="visible")
            page.fill("#token-input", "wrong-wrong-wrong-wrong")
            page.click("#token-form button")
            page.wait_for_timeout(300)
            assert page.locator("#token-box").is_visible()
            page.fill("#token-input", TOKEN)
            page.click("#token-form button")
            page.locator("#token-box").wait_for(state="hidden")
            page.wait_for_function("window.pvdetect.state.source !== null")
            assert "scenes in" in page.locator("#source-label").inner_text()
        finally:
            ctx.close()

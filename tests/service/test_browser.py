"""The web app and an HTML map in a real browser: Debian's Chromium driven by Playwright, against a real
server on 127.0.0.1 with a real ISS photo. Screenshots: set EARTHLOC_SCREENSHOT_DIR=docs/figures to keep them."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import keep_screenshot, running

pytestmark = pytest.mark.slow
TILE = re.compile(r"/api/tiles/(\d+)/(\d+)/(\d+)/(\d+)")


@pytest.fixture(scope="module")
def served(small_index):
    from earthloc.service.app import create_app

    with running(create_app(small_index.path)) as url:
        yield url, small_index


def _tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(south, west, north, east) of a Web-Mercator tile."""
    n = 2.0**z
    lat = lambda t: math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * t / n))))  # noqa: E731
    return lat(y + 1), x / n * 360 - 180, lat(y), (x + 1) / n * 360 - 180


def _settle(page, quiet_ms: int = 1500) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(quiet_ms)


def _loaded(page, selector: str) -> list[int]:
    return page.evaluate(f"[...document.querySelectorAll('{selector}')].map(i => i.complete ? i.naturalWidth : 0)")


def test_page_settles_uploads_a_photo_and_shows_the_evidence(served, browser, tmp_path):
    url, small = served
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}/")
    _settle(page)
    info = page.evaluate("fetch('api/info').then(r => r.json())")
    # bounded: the basemaps' tiles for one view, nothing from outside, no DB tile outside the DB or below min_zoom
    assert len(requests) < 100, len(requests)
    assert all(u.startswith(url) for u in requests), [u for u in requests if not u.startswith(url)][:3]
    (s, w), (n, e) = info["basemap"]["extent"]
    db_tiles = [tuple(map(int, m.groups())) for m in map(TILE.search, requests) if m]
    assert db_tiles, "the DB imagery layer asked for no tile"
    for _, z, x, y in db_tiles:
        ts, tw, tn, te = _tile_bounds(z, x, y)
        assert z >= info["basemap"]["min_zoom"] and ts <= n and tn >= s and tw <= e and te >= w, (z, x, y)
    assert len(_loaded(page, "img.leaflet-tile-loaded")) > 4

    # upload the real photo through the form (candidates verified, the answer's footprint refined)
    page.set_input_files("input[name=photo]", str(small.photo.path))
    page.fill("input[name=nadir_lat]", str(small.photo.nadir[0]))
    page.fill("input[name=nadir_lon]", str(small.photo.nadir[1]))
    page.fill("input[name=top_k]", "3")
    assert page.is_checked("input[name=verify]")  # verification (and the answer's footprint) by default
    page.click("#go")
    page.wait_for_selector("tr.cand", timeout=600_000)
    _settle(page, 1000)
    assert page.locator("tr.cand").count() == 3 and page.locator("#err").inner_text() == ""
    cand_imgs = _loaded(page, "img.earthloc-candidate")
    assert len(cand_imgs) == 3 and all(w > 0 for w in cand_imgs)  # each candidate's DB image, drawn
    assert page.locator("path.earthloc-rank-1").count() == 1
    assert page.locator("path.earthloc-refined").count() == 1  # the verified footprint
    assert all(w > 0 for w in _loaded(page, "img.earthloc-photo")) and page.locator("img.earthloc-photo").count() == 1
    assert "Legend" in page.locator(".earthloc-legend").inner_text()
    assert page.locator("#downloads a").count() == 2
    png = tmp_path / "service-result.jpg"
    page.screenshot(path=str(png), type="jpeg", quality=80)
    keep_screenshot(png, "service-result.jpg")

    # a failed upload shows its error and clears the previous result
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    page.set_input_files("input[name=photo]", str(bad))
    page.click("#go")
    page.wait_for_function("document.getElementById('err').textContent.length > 0", timeout=60_000)
    assert page.locator("#err").inner_text().startswith("notes.jpg: not a JPEG, PNG, TIFF or WebP image")
    assert page.locator("tr.cand").count() == 0 and page.locator("img.earthloc-candidate").count() == 0
    assert page.locator("path.earthloc-refined").count() == 0 and page.locator("#downloads a").count() == 0
    png = tmp_path / "service-error.jpg"
    page.screenshot(path=str(png), type="jpeg", quality=80)
    keep_screenshot(png, "service-error.jpg")

    # an empty result is explained (a nadir over the Pacific: no DB image in its visible disk)
    page.set_input_files("input[name=photo]", str(small.photo.path))
    page.fill("input[name=nadir_lat]", "-10")
    page.fill("input[name=nadir_lon]", "-140")
    page.uncheck("input[name=verify]")
    page.click("#go")
    page.wait_for_function("document.getElementById('note').textContent.length > 0", timeout=300_000)
    assert page.locator("#note").inner_text().startswith("No DB image of this index lies in the area visible")
    assert page.locator("#err").inner_text() == "" and page.locator("tr.cand").count() == 0
    page.close()


def test_locate_map_html_opens_offline_with_the_evidence(small_index, browser, tmp_path):
    earthloc = str(Path(sys.executable).with_name("earthloc"))
    out = tmp_path / "map.html"
    p = small_index.photo
    r = subprocess.run([earthloc, "locate", str(p.path), "--index", str(small_index.path), "--nadir",
                        f"{p.nadir[0]},{p.nadir[1]}", "--top", "1", "--map", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    outside: list[str] = []

    def block(route):  # offline: anything but the file itself and data URIs is refused and recorded
        outside.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(?!file:|data:).*"), block)
    page.goto(out.as_uri())
    _settle(page)
    assert outside == []
    cand_imgs = _loaded(page, "img.earthloc-candidate")
    assert len(cand_imgs) == 1 and all(w > 0 for w in cand_imgs)
    assert page.locator("path.earthloc-refined").count() == 1
    assert all(w > 0 for w in _loaded(page, "img.earthloc-photo"))
    assert len([w for w in _loaded(page, "img.leaflet-tile") if w == 256]) > 0  # the Blue Marble under it
    assert "Legend" in page.locator(".earthloc-legend").inner_text()
    png = tmp_path / "locate-map.jpg"
    page.screenshot(path=str(png), type="jpeg", quality=80)
    keep_screenshot(png, "locate-map.jpg")
    page.close()

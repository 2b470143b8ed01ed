"""The web app's job API against a real uvicorn server on 127.0.0.1, with a real ISS photo and a small
real index (one iss_mini context)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import OFFICIAL_NAME, running, wait_job

MIB = 2**20


@pytest.fixture(scope="module")
def served(small_index):
    from earthloc.service.app import ServiceOptions, create_app

    app = create_app(small_index.path, options=ServiceOptions(max_upload_bytes=2 * MIB, max_pixels=4_000_000))
    with running(app) as url:
        yield url, small_index


def _post(url: str, name: str, data: bytes, fields: dict | None = None, **kw) -> httpx.Response:
    return httpx.post(f"{url}/api/jobs", files={"photo": (name, data, "image/jpeg")}, data=fields or {},
                      timeout=60, **kw)


def test_info_and_page(served):
    url, small = served
    info = httpx.get(f"{url}/api/info").json()
    assert info["model"] == "lite0-gem" and info["db_images"] > 0
    assert info["basemap"]["min_zoom"] == 14 - 6 and info["basemap"]["zooms"] == [14]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "api/jobs" in page.text and "static/evidence.js" in page.text
    assert httpx.get(f"{url}/docs").status_code == 404  # Swagger UI would need a CDN: not offered


def test_job_gives_the_python_apis_candidates_and_downloads(served):
    from earthloc.index.store import Index
    from earthloc.locate import Locator
    from earthloc.models.registry import load_model
    from earthloc.pipeline import LocateOptions, localize

    url, small = served
    photo = small.photo
    r = _post(url, photo.path.name, photo.path.read_bytes(),
              {"nadir_lat": str(photo.nadir[0]), "nadir_lon": str(photo.nadir[1]), "top_k": "5", "verify": "false"})
    assert r.status_code == 202, r.text  # retrieval alone: the Python API's ranking
    job = wait_job(url, r.json()["id"])
    assert job["state"] == "done", job
    res = job["result"]
    expected = localize(Locator(Index.open(small.path), load_model("lite0-gem")), [photo], LocateOptions(top_k=5))[0]
    assert [c["tile"] for c in res["candidates"]] == [c.tile.name for c in expected.candidates]
    assert [c["score"] for c in res["candidates"]] == pytest.approx([c.score for c in expected.candidates], abs=1e-3)
    # the map's evidence: each candidate's own DB image (a JPEG thumbnail of the file) on its footprint
    ev = res["evidence"]
    assert ev["nadir"] == list(photo.nadir) and len(ev["disk"]) == 128 and res["empty_reason"] is None
    for c, want in zip(ev["candidates"], expected.candidates):
        assert c["tile"] == want.tile.name and c["image"].startswith("data:image/jpeg;base64,")
        (s, w), (n, e) = c["bounds"]
        assert (s, w, n, e) == pytest.approx((min(a for a, _ in want.footprint.corners), min(o for _, o in want.footprint.corners),
                                              max(a for a, _ in want.footprint.corners), max(o for _, o in want.footprint.corners)))

    geo = httpx.get(f"{url}/api/jobs/{job['id']}/result.geojson")
    assert geo.status_code == 200 and geo.headers["content-type"] == "application/geo+json"
    assert "attachment" in geo.headers["content-disposition"]
    tiles = [f["properties"]["tile"] for f in geo.json()["features"] if f["properties"]["kind"] == "candidate"]
    assert tiles == [c.tile.name for c in expected.candidates]
    kml = httpx.get(f"{url}/api/jobs/{job['id']}/result.kml")
    assert kml.status_code == 200 and len(ET.fromstring(kml.content).findall(".//{*}Placemark")) == len(tiles) + 1
    assert httpx.get(f"{url}/api/jobs/{job['id']}/result.shp").status_code == 404


def test_official_file_name_carries_the_nadir(served):
    url, small = served
    r = _post(url, OFFICIAL_NAME, small.photo.path.read_bytes(), {"top_k": "3"})
    assert r.status_code == 202, r.text
    job = wait_job(url, r.json()["id"])
    assert job["state"] == "done", job
    assert job["result"]["nadir"] == [35.4, 39.3] and job["result"]["mrf"] == "ISS050-E-70536"
    assert len(job["result"]["candidates"]) == 3
    assert job["result"]["verified"] in (True, False)  # verification runs by default


def test_empty_result_is_explained(served):
    url, small = served
    r = _post(url, small.photo.path.name, small.photo.path.read_bytes(), {"nadir_lat": "-10", "nadir_lon": "-140"})
    job = wait_job(url, r.json()["id"])
    assert job["state"] == "done" and job["result"]["candidates"] == []
    why = job["result"]["empty_reason"]
    assert "-10.0, -140.0" in why and "visible" in why and "covers latitudes" in why


def test_bad_uploads_are_refused_before_decoding(served):
    url, small = served
    data = small.photo.path.read_bytes()
    nadir = {"nadir_lat": "35.4", "nadir_lon": "39.3"}
    r = _post(url, "notes.jpg", b"this is not an image", nadir)
    assert r.status_code == 400 and r.json()["detail"].startswith("notes.jpg: not a JPEG, PNG, TIFF or WebP")
    r = _post(url, "page.jpg", b"<html><script>alert(1)</script></html>", nadir)  # type says JPEG: bytes decide
    assert r.status_code == 400 and "page.jpg" in r.json()["detail"]
    r = _post(url, "cut.jpg", data[:200], nadir)  # a JPEG start with no readable header
    assert r.status_code in (400, 202)
    if r.status_code == 202:  # header read: decoding fails in the job, which says so
        job = wait_job(url, r.json()["id"])
        assert job["state"] == "failed" and job["error"].startswith("cut.jpg") and "/tmp" not in job["error"]
    r = _post(url, small.photo.path.name, data)
    assert r.status_code == 400 and r.json()["detail"].startswith("nadir: unknown")
    r = _post(url, small.photo.path.name, data, {"nadir_lat": "95", "nadir_lon": "10"})
    assert r.status_code == 400 and r.json()["detail"].startswith("nadir:")
    r = _post(url, small.photo.path.name, data, {**nadir, "top_k": "0"})
    assert r.status_code == 400 and r.json()["detail"].startswith("top_k:")
    # a PNG bomb: 3000x2000 px (over the 4 Mpx cap) in a few kB, refused from its header
    buf = io.BytesIO()
    Image.new("L", (3000, 2000)).save(buf, format="PNG")
    r = _post(url, "bomb.png", buf.getvalue(), nadir)
    assert r.status_code == 400 and "3000x2000 px, over the 4,000,000 px limit" in r.json()["detail"]
    # bytes over the cap: refused from Content-Length before the body is read
    r = _post(url, "big.jpg", data + bytes(3 * MIB), nadir)
    assert r.status_code == 413 and "MiB limit" in r.json()["detail"]


def test_a_png_under_a_jpg_name_is_sniffed_and_works(served):
    url, small = served
    buf = io.BytesIO()
    Image.open(small.photo.path).save(buf, format="PNG")
    r = _post(url, "ISS050-E-70536.jpg", buf.getvalue(), {"nadir_lat": "35.4", "nadir_lon": "39.3", "top_k": "2"})
    assert r.status_code == 202
    assert wait_job(url, r.json()["id"])["state"] == "done"


def test_no_path_traversal(served):
    url, _ = served
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/leaflet/../../app.py",
                 "/api/jobs/..%2f..%2fetc%2fpasswd", "/api/jobs/../../etc/passwd", "/api/tiles/2018/8/..%2f/1"):
        r = httpx.get(f"{url}{path}")
        assert r.status_code == 404 and "create_app" not in r.text and "root:" not in r.text, path
    r = _post(url, "../../../../tmp/evil@x.jpg", b"not an image", {"nadir_lat": "1", "nadir_lon": "1"})
    assert r.status_code == 400 and r.json()["detail"].startswith("evil@x.jpg:")  # the directory part is dropped


def test_tiles_at_native_and_coarser_zooms_and_world(served):
    """Native-zoom tiles are the DB image's own pixels; a tile one zoom coarser is the 2x2 native tiles
    below it shrunk; outside the DB there is none; the Blue Marble world tiles exist for zooms 0..4."""
    from earthloc.index.store import Index
    from earthloc.sources.official_folder import OfficialSource

    url, small = served
    src = OfficialSource(Index.open(small.path).db_dir)
    row, _, col, _ = src.coverage(14)[0]
    x, y = col + 2, row + 2  # 2x2 tiles inside the first image, starting at an even tile
    got = {}
    for dx in (0, 1):
        for dy in (0, 1):
            r = httpx.get(f"{url}/api/tiles/2018/14/{x + dx}/{y + dy}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            got[dx, dy] = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
            want = np.asarray(src.tile(14, x + dx, y + dy, 2018), dtype=np.int16)
            assert np.abs(got[dx, dy] - want).mean() < 3  # same pixels up to JPEG re-encoding
    quad = np.concatenate([np.concatenate([got[0, 0], got[0, 1]], axis=0), np.concatenate([got[1, 0], got[1, 1]], axis=0)], axis=1)
    small_quad = np.asarray(Image.fromarray(quad.astype(np.uint8)).resize((256, 256), Image.Resampling.BOX), np.int16)
    r = httpx.get(f"{url}/api/tiles/2018/13/{x // 2}/{y // 2}")
    assert r.status_code == 200
    coarse = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    assert np.abs(coarse - small_quad).mean() < 6
    for z in (12, 10, 8):  # answered at every zoom down to min_zoom, nothing below
        assert httpx.get(f"{url}/api/tiles/2018/{z}/{x >> (14 - z)}/{y >> (14 - z)}").status_code == 200, z
    assert httpx.get(f"{url}/api/tiles/2018/7/{x >> 7}/{y >> 7}").status_code == 404
    assert httpx.get(f"{url}/api/tiles/2018/14/0/0").status_code == 404
    w = httpx.get(f"{url}/api/world/2/2/1.jpg")
    assert w.status_code == 200 and Image.open(io.BytesIO(w.content)).size == (256, 256)
    assert httpx.get(f"{url}/api/world/5/0/0.jpg").status_code == 404


def test_token_required_when_set(small_index):
    from earthloc.service.app import ServiceOptions, create_app

    app = create_app(small_index.path, options=ServiceOptions(token="s3cret-token"))
    with running(app) as url:
        assert httpx.get(f"{url}/").status_code == 200  # the page itself carries no data
        assert httpx.get(f"{url}/static/evidence.js").status_code == 200
        r = httpx.get(f"{url}/api/info")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/api/info", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert httpx.get(f"{url}/api/world/0/0/0.jpg?token=s3cret-token").status_code == 200
        r = _post(url, "x.jpg", small_index.photo.path.read_bytes(), {"nadir_lat": "35.4", "nadir_lon": "39.3"})
        assert r.status_code == 401


def test_serve_refuses_a_public_address_without_a_token(small_index, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "EARTHLOC_TOKEN"}
    r = subprocess.run([str(Path(sys.executable).with_name("earthloc")), "serve", "--index", str(small_index.path), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: token: required when listening on 0.0.0.0")
    assert "Traceback" not in r.stderr

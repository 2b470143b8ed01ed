"""The web app against a real uvicorn server on 127.0.0.1, over a small real index (one iss_mini context)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

CONTEXT = "14_6410_9928"  # Turkey/Syria, z14: the context of ISS050-E-70536
MRF = "ISS050-E-70536"


@pytest.fixture(scope="module")
def served(shared_data, tmp_path_factory):
    import uvicorn

    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.photos import load_photos
    from earthloc.service.app import create_app
    from earthloc.sources.mosaic import MosaicSource

    root = shared_data / "iss_mini"
    tmp = tmp_path_factory.mktemp("service")
    source = MosaicSource.from_iss_mini(root)
    mosaics = [m for m in source.mosaics if m.path.stem == CONTEXT]
    build_db(source, demo_places(source, mosaics), [2018], tmp / "db", workers=2, progress=False)
    index = Index.build(tmp / "db", load_model("lite0-gem"), tmp / "index", progress=False)
    photo = {p.mrf: p for p in load_photos(root / "queries.csv", root / "queries")}[MRF]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(create_app(tmp / "index"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", index, photo
    server.should_exit = True
    thread.join(10)


def test_info_and_page(served):
    url, index, _ = served
    info = httpx.get(f"{url}/api/info").json()
    assert info["db_images"] == len(index) and info["model"] == "lite0-gem"
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "api/locate" in page.text


def test_locate_upload_matches_python_api(served):
    from earthloc.locate import Locator
    from earthloc.models.registry import load_model

    url, index, photo = served
    with open(photo.path, "rb") as f:
        r = httpx.post(f"{url}/api/locate", files={"photo": (photo.path.name, f, "image/jpeg")},
                       data={"nadir_lat": str(photo.nadir[0]), "nadir_lon": str(photo.nadir[1]), "top_k": "5"},
                       timeout=120)
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    cands = [f["properties"] for f in feats if f["properties"]["kind"] == "candidate"]
    nadir = [f for f in feats if f["properties"]["kind"] == "nadir"]
    assert nadir[0]["geometry"]["coordinates"] == [photo.nadir[1], photo.nadir[0]]
    assert [c["rank"] for c in cands] == list(range(1, len(cands) + 1)) and 0 < len(cands) <= 5
    expected = Locator(index, load_model("lite0-gem")).locate(photo, top_k=5)
    assert [c["tile"] for c in cands] == [c.tile.name for c in expected.candidates]
    assert [c["score"] for c in cands] == pytest.approx([c.score for c in expected.candidates], abs=1e-3)


def test_bad_uploads_get_400_naming_the_problem(served):
    url, _, photo = served
    r = httpx.post(f"{url}/api/locate", files={"photo": ("notes.jpg", b"this is not an image", "image/jpeg")},
                   data={"nadir_lat": "35.4", "nadir_lon": "39.3"})
    assert r.status_code == 400 and "notes.jpg" in r.json()["detail"]
    with open(photo.path, "rb") as f:
        r = httpx.post(f"{url}/api/locate", files={"photo": (photo.path.name, f, "image/jpeg")})
    assert r.status_code == 400 and "nadir" in r.json()["detail"]
    with open(photo.path, "rb") as f:
        r = httpx.post(f"{url}/api/locate", files={"photo": (photo.path.name, f, "image/jpeg")},
                       data={"nadir_lat": "95", "nadir_lon": "10"})
    assert r.status_code == 400 and "nadir" in r.json()["detail"]


def test_page_is_offline_and_serves_the_db_imagery_as_basemap(served):
    """No asset from the internet is needed for the map: Leaflet comes from the app, and the basemap tiles
    are cut from the index's own DB images (pixel-exact crops, JPEG-encoded)."""
    import io

    import numpy as np
    from PIL import Image

    from earthloc.sources.official import OfficialSource

    url, index, _ = served
    page = httpx.get(f"{url}/").text
    assert "unpkg.com" not in page and "static/leaflet/leaflet.js" in page
    js = httpx.get(f"{url}/static/leaflet/leaflet.js")
    assert js.status_code == 200 and "Leaflet" in js.text[:300]
    assert httpx.get(f"{url}/static/leaflet/images/layers.png").headers["content-type"] == "image/png"

    info = httpx.get(f"{url}/api/info").json()
    year, zoom = info["basemap"]["years"][0], info["basemap"]["zooms"][0]
    (lat0, lon0), (lat1, lon1) = info["extent"]
    assert lat0 <= index.centre_lat.min() and lat1 >= index.centre_lat.max()
    src = OfficialSource(index.db_dir)
    row, _, col, _ = src.coverage(zoom)[0]  # the first DB image's tile range
    z, x, y = zoom, col + 1, row + 2  # a tile inside it (x = column, y = row)
    r = httpx.get(f"{url}/api/tiles/{year}/{z}/{x}/{y}.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    want = np.asarray(src.tile(z, x, y, year), dtype=np.int16)
    assert got.shape == (256, 256, 3) and np.abs(got - want).mean() < 3  # same pixels up to JPEG re-encoding
    assert httpx.get(f"{url}/api/tiles/{year}/{z}/0/0.jpg").status_code == 404  # no DB image there

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

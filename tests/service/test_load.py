"""Load on 127.0.0.1 (bounded: 30 uploads, one worker, four queued) against `earthloc serve` in its own
process, as it runs for users: no crash, every upload answered 202 or 429 (with Retry-After), every
accepted job finishes, and tile requests stay fast meanwhile."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from earthloc.geo.tiles import fractional_tile
from tests.service.conftest import wait_job

pytestmark = pytest.mark.slow
UPLOADS = 30
P95_LIMIT_S = 0.200


def _tile_urls(info: dict) -> list[str]:
    """Every DB tile of the extent from min_zoom to the native zoom, and the world tiles of zooms 0-4."""
    (s, w), (n, e) = info["basemap"]["extent"]
    year = info["basemap"]["years"][0]
    urls = []
    for z in range(info["basemap"]["min_zoom"], max(info["basemap"]["zooms"]) + 1):
        x0, y0 = (int(v) for v in fractional_tile(w, n, z))
        x1, y1 = (int(v) for v in fractional_tile(e, s, z))
        urls += [f"/api/tiles/{year}/{z}/{x}/{y}" for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    urls += [f"/api/world/{z}/{x}/{y}.jpg" for z in range(5) for x in range(2**z) for y in range(2**z)]
    random.Random(0).shuffle(urls)
    return urls


@pytest.fixture
def server(small_index):
    """`earthloc serve` (one worker, four queue places) on a free port of 127.0.0.1; stopped at the end."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("earthloc")), "serve", "--index", str(small_index.path),
                             "--port", str(port), "--workers", "1", "--queue", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "earthloc serve did not start"
            try:
                if httpx.get(f"{url}/api/info", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
        assert proc.poll() is None, "the server died under load"
    finally:
        proc.terminate()
        proc.wait(30)


def test_concurrent_uploads_are_queued_or_refused_and_tiles_stay_fast(small_index, server):
    data = small_index.photo.path.read_bytes()
    nadir = {"nadir_lat": str(small_index.photo.nadir[0]), "nadir_lon": str(small_index.photo.nadir[1]), "top_k": "5"}
    url = server
    urls = _tile_urls(httpx.get(f"{url}/api/info").json())
    latencies: list[float] = []
    stop = threading.Event()

    def poll_tiles() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(10**6):
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                r = c.get(urls[i % len(urls)])
                latencies.append(time.perf_counter() - t0)
                assert r.status_code in (200, 404), r.text
                time.sleep(0.02)

    def upload(i: int) -> httpx.Response:
        with httpx.Client(timeout=120) as c:
            return c.post(f"{url}/api/jobs", files={"photo": (f"photo-{i}.jpg", data, "image/jpeg")}, data=nadir)

    poller = threading.Thread(target=poll_tiles)
    poller.start()
    try:
        with ThreadPoolExecutor(UPLOADS) as pool:
            answers = list(pool.map(upload, range(UPLOADS)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {202, 429}, codes
        assert codes.count(202) >= 5 and codes.count(429) >= 1  # one running + four queued at least
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)
        ids = [r.json()["id"] for r in answers if r.status_code == 202]
        states = [wait_job(url, i, timeout_s=600) for i in ids]  # none lost: each one answers, and finishes
        assert [s["state"] for s in states] == ["done"] * len(ids), [s.get("error") for s in states]
        assert all(len(s["result"]["candidates"]) == 5 for s in states)
    finally:
        stop.set()
        poller.join(60)
    assert httpx.get(f"{url}/api/info").status_code == 200  # still up
    p95 = float(np.percentile(latencies, 95))
    print(f"\n{len(ids)} jobs accepted, {codes.count(429)} refused with 429; {len(latencies)} tile requests while "
          f"they ran: p50 {np.percentile(latencies, 50) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    assert len(latencies) >= 30 and p95 < P95_LIMIT_S

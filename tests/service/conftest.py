"""Fixtures of the web-app tests: a small real index (one iss_mini context, lite0-gem) and real servers on
127.0.0.1 (uvicorn in a thread, stopped at the end)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CONTEXT = "14_6410_9928"  # Turkey/Syria, z14: the context of ISS050-E-70536
MRF = "ISS050-E-70536"
# The photo's official EarthMatch name (iss_mini/queries.csv, column "source"): centre, nadir, tilt, lens, clouds.
OFFICIAL_NAME = "@36.4@38.2@35.4@39.3@0@1150@10@ISS050-E-70536@.jpg"


@dataclass(frozen=True)
class SmallIndex:
    path: Path
    photo: object  # earthloc.records.Photo of MRF, with NASA's centre and footprint


@pytest.fixture(scope="session")
def small_index(shared_data, tmp_path_factory) -> SmallIndex:
    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.photos import load_photos
    from earthloc.sources.iss_mini import IssMini

    root = shared_data / "iss_mini"
    tmp = tmp_path_factory.mktemp("service")
    source = IssMini.open(root).source()
    mosaics = [m for m in source.mosaics if m.path.stem == CONTEXT]
    build_db(source, demo_places(source, mosaics), [2018], tmp / "db", workers=2, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "index", progress=False)
    photo = {p.mrf: p for p in load_photos(root / "queries.csv", root / "queries")}[MRF]
    return SmallIndex(tmp / "index", photo)


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_job(url: str, job_id: str, timeout_s: float = 180, **kw) -> dict:
    """Poll a job until it is done or failed; returns its last state."""
    deadline = time.time() + timeout_s
    while True:
        s = httpx.get(f"{url}/api/jobs/{job_id}", **kw).json()
        if s["state"] in ("done", "failed"):
            return s
        assert time.time() < deadline, f"job {job_id} still {s['state']} after {timeout_s} s"
        time.sleep(0.2)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium (``EARTHLOC_CHROMIUM``, default /usr/bin/chromium; `make setup` installs it) driven
    by Playwright, headless, with a fresh profile."""
    import os

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=os.environ.get("EARTHLOC_CHROMIUM", "/usr/bin/chromium"),
                               args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def keep_screenshot(png: Path, name: str) -> None:
    """Copy a screenshot to ``EARTHLOC_SCREENSHOT_DIR`` (e.g. docs/figures) when that is set."""
    import os
    import shutil

    target = os.environ.get("EARTHLOC_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, Path(target) / name)

"""Weights download (against a real HTTP server on 127.0.0.1, never the internet) and the `earthloc model` CLI."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from earthloc.errors import InputError
from earthloc.models.fetch import EARTHLOC_WEIGHTS, RemoteWeights, cached_path, fetch

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def server():
    """Serves PAYLOAD at any path ending in .pth, 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if not self.path.endswith(".pth"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EARTHLOC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_official_remote_is_torchhub_named():
    assert EARTHLOC_WEIGHTS.url == "https://huggingface.co/torchgeo/earthloc/resolve/main/earthloc-8b632e30.pth"
    assert EARTHLOC_WEIGHTS.sha256_prefix == "8b632e30"


def test_fetch_checks_hash_and_lands_atomically(server, cache):
    remote = RemoteWeights(f"{server}/w.pth", f"weights-{DIGEST[:8]}.pth")
    path = fetch(remote, progress=False)
    assert path == cached_path(remote) and path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert fetch(remote, progress=False) == path  # cached: no second download needed


def test_fetch_hash_mismatch_keeps_nothing(server, cache):
    remote = RemoteWeights(f"{server}/w.pth", "weights-00000000.pth")
    with pytest.raises(InputError, match="expected prefix 00000000: corrupt download, nothing kept"):
        fetch(remote, progress=False)
    assert not any((cache / "models").iterdir())


def test_fetch_http_error(server, cache):
    remote = RemoteWeights(f"{server}/missing", f"weights-{DIGEST[:8]}.pth")
    with pytest.raises(InputError, match="download failed: HTTP 404"):
        fetch(remote, progress=False)


def test_fetch_offline_is_clear(cache):
    remote = RemoteWeights("http://127.0.0.1:9/earthloc.pth", f"weights-{DIGEST[:8]}.pth")  # discard port: refused
    with pytest.raises(InputError, match="cannot download .*no internet\\?.*pass it as checkpoint"):
        fetch(remote, progress=False)


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "earthloc"
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(exe), "model", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_list_and_info(tmp_path):
    out = _cli("list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["earthloc", "lite0-gem", "lite0-mixvpr", "earthloc2"]
    info = _cli("info", "earthloc", env_extra={"EARTHLOC_CACHE": str(tmp_path)})
    assert info.returncode == 0, info.stderr
    assert "descriptor dim: 4096" in info.stdout and "320 x 320 px" in info.stdout
    assert "parameters:     27,662,212" in info.stdout and "earthloc model fetch earthloc" in info.stdout


def test_cli_errors_one_line_exit_2():
    out = _cli("info", "resnet9000")
    assert out.returncode == 2 and out.stderr.strip() == \
        "error: resnet9000: unknown model; known: earthloc, lite0-gem, lite0-mixvpr, earthloc2"


def test_fetch_of_packaged_weights_is_refused():
    from earthloc.cli.model import fetch_cmd

    with pytest.raises(InputError, match="lite0-gem: its weights ship with the Python packages"):
        fetch_cmd("lite0-gem")

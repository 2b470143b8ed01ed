"""`earthloc model fetch earthloc2` through huggingface_hub, against a loopback server standing in for the Hub
(HF_ENDPOINT), never the internet; and `earthloc model info earthloc2`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import COMMIT, FakeHub

from earthloc.errors import InputError
from earthloc.models.fetch import EARTHLOC2_WEIGHTS, HubWeights, fetch_hub, local_weights

REPO = EARTHLOC2_WEIGHTS.repo_id
PAYLOAD = os.urandom(250_000)
FILES = {"README.md": b"# EarthLoc2\n", ".gitattributes": b"*.torch filter=lfs\n", "best_model_95.torch": PAYLOAD}


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EARTHLOC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _downloads(hub: FakeHub) -> list[str]:
    return [r for r in hub.requests if r.startswith("GET") and "/resolve/" in r]


def test_fetch_lands_verified_file_in_cache(cache, monkeypatch):
    with FakeHub(REPO, FILES) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        path = fetch_hub(EARTHLOC2_WEIGHTS, progress=False)
        assert path == cache / "models" / "earthloc2" / "best_model_95.torch"
        assert path.read_bytes() == PAYLOAD
        assert local_weights(EARTHLOC2_WEIGHTS) == [path]  # what load_model("earthloc2") will pick up
        # the file came from the commit the file list (and its sha256) was read at
        assert _downloads(hub) == [f"GET /{REPO}/resolve/{COMMIT}/best_model_95.torch"]
        assert fetch_hub(EARTHLOC2_WEIGHTS, progress=False) == path  # present with the right hash: no download
        assert len(_downloads(hub)) == 1


def test_fetch_checksum_mismatch_keeps_nothing(cache, monkeypatch):
    with FakeHub(REPO, FILES, advertised={"best_model_95.torch": "ab" * 32}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(InputError, match=r"sha256 .*, the Hub says abababab.*corrupt download, nothing kept"):
            fetch_hub(EARTHLOC2_WEIGHTS, progress=False)
    assert local_weights(EARTHLOC2_WEIGHTS) == []


def test_fetch_needs_exactly_one_weights_file(cache, monkeypatch):
    with FakeHub(REPO, {**FILES, "epoch_3.pth": b"x"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(InputError, match="exactly one weights file.*found best_model_95.torch, epoch_3.pth"):
            fetch_hub(EARTHLOC2_WEIGHTS, progress=False)
        named = HubWeights(REPO, filename="epoch_3.pth", local_name="earthloc2")
        assert fetch_hub(named, progress=False).read_bytes() == b"x"


def test_fetch_unknown_repo_is_http_error(cache, monkeypatch):
    with FakeHub("someone/else", FILES) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(InputError, match=r"Hub request failed \(HTTP 404\)"):
            fetch_hub(EARTHLOC2_WEIGHTS, progress=False)


def test_fetch_offline_says_what_to_download_and_where(cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(InputError) as err:
        fetch_hub(EARTHLOC2_WEIGHTS, progress=False)
    msg = str(err.value)
    assert "cannot reach the Hugging Face Hub" in msg
    assert f"from https://huggingface.co/{REPO}/tree/main" in msg
    assert f"put it in {cache / 'models' / 'earthloc2'}/" in msg


def _cli(*args: str, env_extra: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "earthloc"
    return subprocess.run([str(exe), "model", *args], capture_output=True, text=True,
                          env={**os.environ, **env_extra}, timeout=300)


def test_cli_fetch_earthloc2(tmp_path):
    with FakeHub(REPO, FILES) as hub:
        out = _cli("fetch", "earthloc2", env_extra={"HF_ENDPOINT": hub.url, "EARTHLOC_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "models" / "earthloc2" / "best_model_95.torch")
    offline = _cli("fetch", "earthloc2", env_extra={"HF_ENDPOINT": "http://127.0.0.1:9",
                                                    "EARTHLOC_CACHE": str(tmp_path / "other")})
    assert offline.returncode == 2
    lines = offline.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: http://127.0.0.1:9/pawlo2013/EarthLoc2: cannot reach")


def test_cli_info_earthloc2(tmp_path):
    out = _cli("info", "earthloc2", env_extra={"EARTHLOC_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in ("descriptor dim:", " 3072\n", "518 x 518 px RGB", "88,337,761",
                     "none loaded; get them with", "earthloc model fetch earthloc2",
                     "published R@1/R@10/R@100: 83.8/93.0/97.7 average", "alps 84.4/94.2/98.4",
                     "earthloc 57.1/74.4/88.9 average", "pawelpiwowarski/EarthLoc2 documentation/results.md"):
        assert expected in text, (expected, text)

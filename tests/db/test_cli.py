"""``earthloc db`` end to end in subprocesses: build, verify, errors, and resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tileserver import Faults, TileServer

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.wmts import WmtsSource

EXE = str(Path(sys.executable).parent / "earthloc")


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("db")
    r = run("db", "build", "--source", "iss-mini", "--zooms", "12", "--limit", "4", "--workers", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "4 places at zooms [12] x 1 years = 4 images" in r.stdout and "wrote 4" in r.stdout
    return out


def test_verify_passes_on_a_fresh_build_and_catches_damage(built, tmp_path):
    r = run("db", "verify", built)
    assert r.returncode == 0 and "4 images decoded and checksummed: 0 problems" in r.stdout, r.stdout + r.stderr
    df = manifest.load(built)
    # damage copies, not the shared fixture
    import shutil

    db = tmp_path / "db"
    shutil.copytree(built, db)
    truncated, flipped = db / df.path[0], db / df.path[1]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    (db / df.path[3]).unlink()
    stray = db / "database" / "2018_12" / "x.jpg"
    stray.write_bytes(b"not a jpeg")
    r = run("db", "verify", db)
    assert r.returncode == 1
    assert f"BAD {df.path[0]}: checksum differs" in r.stderr
    assert f"BAD {df.path[1]}: checksum differs" in r.stderr
    assert f"BAD {df.path[3]}: missing" in r.stderr
    assert "database/2018_12/x.jpg: JPEG not listed in the manifest" in r.stderr
    assert "4 images decoded and checksummed: 4 problems" in r.stdout
    # without a manifest, the truncated file is still caught by decoding it
    (db / manifest.MANIFEST).unlink()
    stray.unlink()
    r = run("db", "verify", db)
    assert r.returncode == 1 and f"BAD {df.path[0]}: does not decode" in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--source", "nowhere:x", "--out", "D"], "error: --source nowhere:x: use eox"),
    (["--source", "eox", "--region", "atlantis", "--out", "D"], "error: area 'atlantis': unknown"),
    (["--source", "iss-mini", "--years", "2021", "--out", "D"], "error: --years [2021]: not served"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    r = run("db", "build", *[str(tmp_path / "out") if a == "D" else a for a in args])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("region, message", [
    ("bbox:10,50,5", "region 'bbox:10,50,5'"),
    ("bbox:10,50,5,40", "need -180<=W,E<=180 and -90<=S<N<=90"),
    ("circle:45,10,-5", "radius > 0 km"),
])
def test_bad_regions_are_input_errors(region, message):
    from earthloc.db.grid import Region
    from earthloc.errors import InputError

    with pytest.raises(InputError, match=message):
        Region.parse(region)


def test_refused_tiles_stop_the_build_naming_the_url(mini, tmp_path):
    from tileserver import Faults

    block = TileBlock(12, 1162, 2524)
    (tmp_path / "places.txt").write_text(block.name + "\n")
    faults = Faults(status={(2018, 12, 2524, 1162): 403})
    with TileServer(mini, faults=faults) as server:
        r = run("db", "build", "--source", "wmts:" + server.template, "--years", "2018", "--places",
                tmp_path / "places.txt", "--out", tmp_path / "db", "--tile-cache", tmp_path / "cache")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: {server.url}/tiles/2018/12/2524/1162.jpg: HTTP 403: forbidden" in r.stderr


@pytest.mark.slow
def test_resume_after_sigkill_refetches_almost_nothing(shared_data, tmp_path):
    ctx = pd.read_csv(shared_data / "iss_mini" / "contexts.csv").set_index("candidate_tile").loc["12_1164_2526"]
    blocks = [TileBlock(12, int(ctx.tile_row0) + r, int(ctx.tile_col0) + c) for r in range(0, 9, 2) for c in range(0, 9, 2)]
    (tmp_path / "places.txt").write_text("".join(b.name + "\n" for b in blocks))
    needed = {(2018, t.z, t.x, t.y) for b in blocks for t in b.tiles()}
    mini = IssMini.open(shared_data).source()
    with TileServer(mini, latency_s=0.03) as server:
        cmd = [EXE, "db", "build", "--source", "wmts:" + server.template, "--years", "2018", "--places",
               tmp_path / "places.txt", "--out", tmp_path / "db", "--tile-cache", tmp_path / "cache",
               "--workers", "3", "--concurrency", "3", "--rate", "0"]
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while server.outcomes["ok"] < 70 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        first = set(server.counts)
        partial = list((tmp_path / "db" / "database").rglob("*.jpg"))
        assert 0 < len(first) < len(needed) and len(partial) < 25
        server.reset_counts()
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        second = set(server.counts)
        refetched = first & second
        assert first | second == needed and server.n_requests == len(second)
        assert len(refetched) <= 3, refetched  # at most the requests in flight at the kill
        print(f"killed after {len(first)} tiles; {len(partial)} images done; re-fetched {len(refetched)} tiles")
    # the resumed DB is complete and identical to a clean one
    with TileServer(mini) as server, WmtsSource(server.template, years=[2018], cache_dir=tmp_path / "c2",
                                                rate_per_host=None) as src:
        build_db(src, blocks, [2018], tmp_path / "clean", progress=False)
    resumed, clean = manifest.load(tmp_path / "db"), manifest.load(tmp_path / "clean")
    assert len(resumed) == 25 and resumed.sha256.tolist() == clean.sha256.tolist()
    assert run("db", "verify", tmp_path / "db").returncode == 0
    assert not list((tmp_path / "db").rglob("*.tmp"))


def test_a_missing_tile_skips_its_place_builds_the_rest_and_exits_1(mini, tmp_path):
    blocks = [TileBlock(12, 1162, 2524), TileBlock(12, 1162, 2526), TileBlock(12, 1164, 2524)]
    (tmp_path / "places.txt").write_text("".join(b.name + "\n" for b in blocks))
    gone = (2018, 12, 2529, 1162)  # in the second place only (its top-right tile)
    assert sum(any((t.x, t.y) == gone[2:] for t in b.tiles()) for b in blocks) == 1
    with TileServer(mini, faults=Faults(status={gone: 404})) as server:
        cmd = ("db", "build", "--source", "wmts:" + server.template, "--years", "2018", "--places",
               tmp_path / "places.txt", "--out", tmp_path / "db", "--tile-cache", tmp_path / "cache")
        r = run(*cmd)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "wrote 2," in r.stdout
        assert f"{server.url}/tiles/2018/12/2529/1162.jpg: HTTP 404" in r.stderr
        missing = pd.read_csv(tmp_path / "db" / "missing.csv")
        assert missing.tile.tolist() == [blocks[1].name] and missing.year.tolist() == [2018]
        assert sorted(manifest.load(tmp_path / "db").tile) == sorted([blocks[0].name, blocks[2].name])
        server.set_faults(Faults())  # the tile appears: the re-run builds just that place
        server.reset_counts()
        r = run(*cmd)
        assert r.returncode == 0 and "wrote 1, kept 2" in r.stdout, r.stdout + r.stderr
        assert server.n_requests == 1
    assert not (tmp_path / "db" / "missing.csv").exists() and len(manifest.load(tmp_path / "db")) == 3

"""``db build --ray`` on a REAL multi-process Ray cluster on 127.0.0.1, against the loopback tile server.

The cluster is a head node and a worker node, each started with ``ray start --block`` as its own process
tree (as on real machines); the last test SIGKILLs the worker node mid-build. The cluster is stopped by
ending exactly the processes these tests started: ``ray stop`` would end every Ray on this machine,
other users' and other test runs' included. ``RAY_TMPDIR`` keeps the cluster's files (and its
``ray_current_cluster`` address file) out of ``/tmp/ray``, so no other ``ray.init`` joins it by mistake.
The cluster runs without Ray's token authentication (``RAY_AUTH_MODE=disabled``): a throwaway cluster on
this machine; docs/scale.md says how to run a real one with a token.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from tileserver import Faults, TileServer

from earthloc.db import manifest, ray_build
from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.sources.spec import open_source
from earthloc.sources.wmts import WmtsSource

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")
EXE = str(Path(sys.executable).parent / "earthloc")
CLIENT_ENV = {"RAY_AUTH_MODE": "disabled"}  # what a client of the test cluster needs (see the module doc)
CONTEXT = "12_1164_2526"  # a 12x12-tile z12 iss_mini context: 5x5 places at stride 2, 144 distinct tiles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Ray nodes started as separate process trees on 127.0.0.1; ``stop`` ends exactly those processes."""

    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # fast node-death detection, so the killed worker's batches come back in seconds, not a minute
        self.env = {**os.environ, **CLIENT_ENV, "RAY_TMPDIR": str(tmp), "RAY_health_check_period_ms": "500",
                    "RAY_health_check_failure_threshold": "4", "RAY_USAGE_STATS_ENABLED": "0"}
        self.nodes: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                  "--object-store-memory", str(100_000_000), "--disable-usage-stats"]
        proc = subprocess.Popen([RAY, "start", *args, *common], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.nodes.append(proc)
        return proc

    def start_head(self) -> None:
        self._start("--head", "--port", str(self.port), "--include-dashboard", "false")
        self.wait_nodes(1)

    def add_worker(self) -> subprocess.Popen:
        n = self.alive()
        proc = self._start("--address", self.address)
        self.wait_nodes(n + 1)
        return proc

    def alive(self) -> int:
        r = subprocess.run([RAY, "status", "--address", self.address], capture_output=True, text=True,
                           env=self.env, timeout=60)
        active = r.stdout.split("Active:")[-1].split("Pending:")[0] if r.returncode == 0 else ""
        return active.count("node_")

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.nodes[-1:]):
                raise RuntimeError(f"Ray cluster at {self.address} did not reach {n} nodes")
            time.sleep(0.5)

    @staticmethod
    def kill(proc: subprocess.Popen) -> int:
        """SIGKILL one node: its ``ray start``, raylet, agents and worker processes. Returns how many died."""
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)
        return len(tree)

    def stop(self) -> None:
        """SIGTERM each node's ``ray start --block`` (it stops its own processes), then SIGKILL stragglers."""
        trees = []
        for proc in self.nodes:
            try:
                root = psutil.Process(proc.pid)
                trees.append([root, *root.children(recursive=True)])
            except psutil.NoSuchProcess:
                continue
            proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs([p for t in trees for p in t], timeout=20)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in self.nodes:
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster():
    import ray

    saved = {k: os.environ.get(k) for k in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)  # this process drives builds on the cluster too
    with tempfile.TemporaryDirectory(prefix="elray-", dir="/tmp") as tmp:  # short: Ray's socket paths
        c = Cluster(Path(tmp))
        try:
            c.start_head()
            c.worker = c.add_worker()
            yield c
        finally:
            if ray.is_initialized():
                ray.shutdown()
            c.stop()
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def places(shared_data) -> list[TileBlock]:
    ctx = pd.read_csv(shared_data / "iss_mini" / "contexts.csv").set_index("candidate_tile").loc[CONTEXT]
    return [TileBlock(12, int(ctx.tile_row0) + r, int(ctx.tile_col0) + c) for r in range(0, 9, 2) for c in range(0, 9, 2)]


@pytest.fixture(scope="module")
def local_dir(mini, places, tmp_path_factory) -> Path:
    """The reference: the same places built locally (one process, no Ray) from the tile server."""
    out = tmp_path_factory.mktemp("local")
    with TileServer(mini) as server, WmtsSource(server.template, years=[2018], cache_dir=out / "cache",
                                                rate_per_host=None) as src:
        build_db(src, places, [2018], out / "db", progress=False)
    return out / "db"


@pytest.fixture(scope="module")
def local_db(local_dir) -> pd.DataFrame:
    return manifest.load(local_dir)


def _recipe(server: TileServer, cache: Path, concurrency: int = 4):
    return functools.partial(open_source, "wmts:" + server.template, years=[2018], cache_dir=cache,
                             concurrency=concurrency, rate_per_host=None, retries=2)


def test_cli_build_on_the_cluster_equals_local_and_records_a_missing_place(cluster, mini, places, local_db, tmp_path):
    gone = places[0].tiles()[0]  # the region's corner tile (in no other place) answers 404 for good
    faults = Faults(status={(2018, gone.z, gone.x, gone.y): 404})
    (tmp_path / "places.txt").write_text("".join(b.name + "\n" for b in places))
    with TileServer(mini, faults=faults) as server:
        cmd = [EXE, "db", "build", "--source", "wmts:" + server.template, "--years", "2018", "--places",
               tmp_path / "places.txt", "--out", tmp_path / "db", "--tile-cache", tmp_path / "cache",
               "--ray", cluster.address, "--ray-batch", "3", "--workers", "3", "--concurrency", "4", "--rate", "0"]
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **CLIENT_ENV})
        assert r.returncode == 1, r.stderr  # finished, but one image is missing
        assert "2 Ray nodes" in r.stdout and "wrote 24," in r.stdout, r.stdout
        assert "MISSING database/2018_12/" in r.stderr and f"{gone.y}.jpg: HTTP 404" in r.stderr
        assert "Traceback" not in r.stderr
        assert server.n_requests == len(server.counts) == 144  # each tile once, the whole cluster together
        built = manifest.load(tmp_path / "db")
        missing = pd.read_csv(tmp_path / "db" / "missing.csv")
        assert missing.tile.tolist() == [places[0].name] and "HTTP 404" in missing.reason[0]
        expected = local_db[local_db.tile != places[0].name].reset_index(drop=True)
        assert built.drop(columns="sha256").equals(expected.drop(columns="sha256"))
        assert built.sha256.tolist() == expected.sha256.tolist()  # the same bytes as the local build

        server.set_faults(Faults())  # the tile is back: a re-run builds only the missing image
        server.reset_counts()
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **CLIENT_ENV})
        assert r.returncode == 0, r.stderr
        assert "wrote 1, kept 24" in r.stdout and server.n_requests == 1
    assert manifest.load(tmp_path / "db").sha256.tolist() == local_db.sha256.tolist()
    assert not (tmp_path / "db" / "missing.csv").exists()


def test_one_rate_and_concurrency_limit_for_the_whole_cluster(cluster, mini, places, tmp_path):
    rate, concurrency = 40.0, 2
    with TileServer(mini, latency_s=0.03) as server:
        rep = ray_build.build_db_on_ray(_recipe(server, tmp_path / "cache", concurrency=4), places[:10], [2018],
                                        tmp_path / "db", address=cluster.address, rate_per_host=rate,
                                        concurrency=concurrency, batch=2, threads=3, progress=False)
        gaps = np.diff(sorted(server.arrivals))
    assert rep.nodes == 2 and rep.written == 10
    n = len(gaps) + 1
    assert n == rep.requests == len({t for b in places[:10] for t in b.tiles()})
    # each worker process would allow 4 in flight and no rate limit (8 for the two); the one gate allows 2
    # and 40/s. The server counts a request until its handler returns, a moment after the client has the
    # body and hands its slot on: it may see one more than the gate.
    assert rep.peak_in_flight == concurrency and server.peak_in_flight <= concurrency + 1, (rep, server.peak_in_flight)
    assert sum(gaps) >= (n - 1) / rate * 0.95 and np.median(gaps) > 0.9 / rate, (sum(gaps), np.median(gaps))


@pytest.mark.parametrize("kind", ["iss-mini", "official"])
def test_local_sources_build_on_the_cluster_as_locally(cluster, places, local_dir, tmp_path, kind):
    """Workers open any source from its recipe: the iss_mini mosaics, or an official-layout folder (here the
    WMTS-built reference DB, re-cut read-only)."""
    recipe = functools.partial(open_source, kind if kind == "iss-mini" else f"official:{local_dir}")
    rep = ray_build.build_db_on_ray(recipe, places[:6], [2018], tmp_path / "ray", address=cluster.address,
                                    batch=2, threads=2, progress=False)
    build_db(recipe(), places[:6], [2018], tmp_path / "local", progress=False)
    assert rep.written == 6 and rep.nodes == 2
    built, local = manifest.load(tmp_path / "ray"), manifest.load(tmp_path / "local")
    assert len(built) == 6 and built.equals(local)  # same names, same bytes (sha256), same rows


def test_driver_killed_mid_build_resumes_to_the_local_db(cluster, mini, places, local_db, tmp_path):
    (tmp_path / "places.txt").write_text("".join(b.name + "\n" for b in places))
    with TileServer(mini, latency_s=0.1) as server:
        cmd = [EXE, "db", "build", "--source", "wmts:" + server.template, "--years", "2018", "--places",
               tmp_path / "places.txt", "--out", tmp_path / "db", "--tile-cache", tmp_path / "cache",
               "--ray", cluster.address, "--ray-batch", "2", "--workers", "2", "--concurrency", "4", "--rate", "0"]
        env = {**os.environ, **CLIENT_ENV}
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 240
        while len(list((tmp_path / "db").rglob("*.jpg"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = len(list((tmp_path / "db").rglob("*.jpg")))
        assert proc.returncode == -signal.SIGKILL and 5 <= done < 25
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert f"kept {done} already built" in r.stdout and f"wrote {25 - done}," in r.stdout, r.stdout
    built = manifest.load(tmp_path / "db")
    assert built.equals(local_db)  # resumed on the cluster: the same rows and bytes as one local build
    assert not list((tmp_path / "db").rglob("*.tmp")) and not (tmp_path / "db" / manifest.JOURNAL).exists()


def _running(node: subprocess.Popen, task: str) -> bool:
    """Whether a worker process of ``node`` runs ``task`` now (Ray titles it ``ray::<task>``, ``ray::IDLE`` when not)."""
    try:
        procs = psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for p in procs:
        try:
            if f"ray::{task}" in " ".join(p.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def test_killing_a_worker_node_mid_build_loses_nothing_and_writes_nothing_twice(cluster, mini, places, local_db,
                                                                                 tmp_path, monkeypatch):
    writes: list[str] = []
    real_save = ray_build.save_image

    def counted_save(out_dir, block, year, data):  # the real write, counted: the driver writes every image
        writes.append(block.name)
        return real_save(out_dir, block, year, data)

    monkeypatch.setattr(ray_build, "save_image", counted_save)
    killed = threading.Event()

    def kill_when_half_done() -> None:  # ... and only while the worker node runs a batch: the kill must hit one
        deadline = time.monotonic() + 240
        while (len(writes) < 6 or not _running(cluster.worker, "_build_batch")) and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.kill(cluster.worker)
        killed.set()

    with TileServer(mini, latency_s=0.15) as server:  # slow tiles: both nodes always hold a batch
        killer = threading.Thread(target=kill_when_half_done, daemon=True)
        killer.start()
        rep = ray_build.build_db_on_ray(_recipe(server, tmp_path / "cache"), places, [2018], tmp_path / "db",
                                        address=cluster.address, concurrency=4, rate_per_host=None, batch=2,
                                        threads=2, progress=False)
        killer.join(timeout=60)
    assert killed.is_set() and rep.nodes == 2
    assert rep.resubmitted >= 1, rep  # the kill hit a batch in flight, and it ran again on the head
    # the dead node's HTTP slots and tile claims were freed when Ray marked it dead, not after their 120 s
    assert rep.seconds < 90, rep
    assert sorted(writes) == sorted(b.name for b in places)  # every image written once, none twice
    built = manifest.load(tmp_path / "db")
    assert built.sha256.tolist() == local_db.sha256.tolist() and len(built) == 25
    assert not list((tmp_path / "db").rglob("*.tmp")) and not (tmp_path / "db" / manifest.JOURNAL).exists()

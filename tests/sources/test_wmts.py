"""WmtsSource against a real HTTP server on 127.0.0.1 serving real iss_mini tiles."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image
from tileserver import Faults, TileServer

from earthloc.db import manifest
from earthloc.db.build import build_db, encode_jpeg
from earthloc.geo.tiles import TileBlock
from earthloc.sources.wmts import EOX_URL, TileFetchError, WmtsSource, eox_attribution


def _blocks(row, rows=(0, 2, 4, 6, 8), cols=(0, 2, 4, 6, 8)):
    """4x4 places inside the 12x12 context, offsets in tiles from its top-left."""
    return [TileBlock(int(row.zoom), int(row.tile_row0) + r, int(row.tile_col0) + c) for r in rows for c in cols]


def _src(server, tmp_path, **kw):
    kw.setdefault("rate_per_host", None)
    kw.setdefault("backoff_s", 0.01)
    return WmtsSource(server.template, years=[2018], cache_dir=tmp_path / "cache", **kw)


def test_db_image_equals_source_crop_and_each_tile_is_requested_once(mini, context, tmp_path):
    row, ctx = context
    blocks = _blocks(row)  # all 25 places of the context: they need its 144 tiles
    with TileServer(mini, fmt="png") as server, _src(server, tmp_path) as src:
        rep = build_db(src, blocks, [2018], tmp_path / "db", workers=6, progress=False)
        assert rep.written == 25
        needed = {(2018, t.z, t.x, t.y) for b in blocks for t in b.tiles()}
        assert len(needed) == 144
        assert set(server.counts) == needed and server.n_requests == 144  # 5.76 requests per DB image
        assert src.stats["downloads"] == 144
    df = manifest.load(tmp_path / "db").set_index("tile")
    for b in blocks[::6]:
        y0, x0 = (b.row - row.tile_row0) * 128, (b.col - row.tile_col0) * 128
        expected = ctx[y0 : y0 + 512, x0 : x0 + 512].repeat(2, axis=0).repeat(2, axis=1)
        data = (tmp_path / "db" / df.loc[b.name, "path"]).read_bytes()
        assert data == encode_jpeg(Image.fromarray(expected)), b.name


def test_rebuild_from_cache_makes_no_request(mini, context, tmp_path):
    row, _ = context
    blocks = _blocks(row, rows=(0, 2), cols=(0, 2))
    with TileServer(mini) as server:
        with _src(server, tmp_path) as src:
            build_db(src, blocks, [2018], tmp_path / "a", progress=False)
        first = server.n_requests
        assert first == 36  # (2*2+2)^2 distinct tiles for 2x2 places
        with _src(server, tmp_path) as src:  # new process-like source, same cache folder
            build_db(src, blocks, [2018], tmp_path / "b", progress=False)
            assert src.stats["cache_hits"] == 64 and src.stats["requests"] == 0
        assert server.n_requests == first
    a, b = manifest.load(tmp_path / "a"), manifest.load(tmp_path / "b")
    assert a.sha256.tolist() == b.sha256.tolist()


def test_faults_still_give_a_complete_identical_db(mini, context, tmp_path):
    row, _ = context
    blocks = _blocks(row, rows=(0, 2, 4), cols=(0, 2, 4))
    with TileServer(mini) as server:
        with _src(server, tmp_path / "clean") as src:
            build_db(src, blocks, [2018], tmp_path / "clean_db", workers=4, progress=False)
        server.set_faults(Faults(p_reset=0.1, p_500=0.15, p_429=0.03, retry_after="1", p_truncate=0.1, seed=3))
        server.reset_counts()
        with _src(server, tmp_path / "faulty") as src:
            build_db(src, blocks, [2018], tmp_path / "faulty_db", workers=4, progress=False)
            assert src.stats["retries"] == server.n_requests - 64
        for fault in ("reset", "500", "429", "truncate"):
            assert server.outcomes[fault] > 0, fault
        assert server.outcomes["ok"] == 64
    clean, faulty = manifest.load(tmp_path / "clean_db"), manifest.load(tmp_path / "faulty_db")
    assert len(faulty) == 9 and faulty.sha256.tolist() == clean.sha256.tolist()
    for p in faulty.path:
        with Image.open(tmp_path / "faulty_db" / p) as im:
            im.load()
            assert im.size == (1024, 1024)


def test_429_waits_retry_after_and_pauses_the_host(mini, context, tmp_path):
    row, _ = context
    z, x, y = int(row.zoom), int(row.tile_col0), int(row.tile_row0)
    faults = Faults(script={(2018, z, x, y): ["429"]}, retry_after="1")
    with TileServer(mini, faults=faults) as server, _src(server, tmp_path) as src:
        t0 = time.monotonic()
        src.tile(z, x, y, 2018)
        assert 1.0 <= time.monotonic() - t0 < 3.0
        assert server.counts[(2018, z, x, y)] == 2 and src.stats["retries"] == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refusals_fail_at_once_naming_the_url(mini, context, tmp_path, status):
    row, _ = context
    z, x, y = int(row.zoom), int(row.tile_col0), int(row.tile_row0)
    with TileServer(mini, faults=Faults(status={(2018, z, x, y): status})) as server, _src(server, tmp_path) as src:
        with pytest.raises(TileFetchError) as err:
            src.tile(z, x, y, 2018)
        assert src.url(z, x, y, 2018) in str(err.value) and f"HTTP {status}" in str(err.value)
        assert server.n_requests == 1  # no retry on a refusal


def test_exhausted_retries_name_the_url_and_last_error(mini, context, tmp_path):
    row, _ = context
    z, x, y = int(row.zoom), int(row.tile_col0), int(row.tile_row0)
    with TileServer(mini, faults=Faults(p_500=1.0)) as server, _src(server, tmp_path, retries=3) as src:
        with pytest.raises(TileFetchError, match="gave up after 4 attempts; last: HTTP 500"):
            src.tile(z, x, y, 2018)
        assert server.n_requests == 4
        assert not src.cache_path(z, x, y, 2018).exists()


def test_concurrency_cap_rate_limit_and_single_flight(mini, context, tmp_path):
    row, _ = context
    z, x0, y0 = int(row.zoom), int(row.tile_col0), int(row.tile_row0)
    tiles = [(z, x0 + i % 12, y0 + i // 12) for i in range(40)]
    with TileServer(mini, latency_s=0.05) as server, _src(server, tmp_path, concurrency=3) as src:
        threads = [threading.Thread(target=src.tile, args=(*t, 2018)) for t in tiles]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert server.peak_in_flight <= 3 and server.n_requests == 40
        server.reset_counts()
        same = [threading.Thread(target=src.tile, args=(z, x0, y0 + 5, 2018)) for _ in range(8)]
        [t.start() for t in same]
        [t.join() for t in same]
        assert server.n_requests == 1  # eight callers, one download (the other seven wait, then hit the cache)
    with TileServer(mini) as server, _src(server, tmp_path / "r", concurrency=8, rate_per_host=20.0) as src:
        threads = [threading.Thread(target=src.tile, args=(*t, 2018)) for t in tiles[:21]]
        [t.start() for t in threads]
        [t.join() for t in threads]
        gaps = np.diff(sorted(server.arrivals))
        # 20 req/s from the first; single gaps carry the server's thread-scheduling jitter (load avg ~10 here)
        assert len(gaps) == 20 and gaps.min() > 0.025 and np.median(gaps) > 0.045 and sum(gaps) >= 0.95


def test_callers_waiting_for_a_tile_in_flight_leave_the_http_slots_free(mini, context, tmp_path):
    """Neighbouring DB images ask for the same tiles at once; their waiting must not starve other tiles."""
    row, _ = context
    z, x0, y0 = int(row.zoom), int(row.tile_col0), int(row.tile_row0)
    latency = 0.4
    with TileServer(mini, latency_s=latency) as server, _src(server, tmp_path, concurrency=2) as src:
        first = threading.Thread(target=src.tile, args=(z, x0, y0, 2018))
        first.start()
        time.sleep(0.05)
        waiters = [threading.Thread(target=src.tiles, args=([(z, x0, y0, 2018)],)) for _ in range(4)]
        [t.start() for t in waiters]
        time.sleep(0.05)
        t0 = time.perf_counter()
        src.tiles([(z, x0 + 1, y0, 2018)])  # the second slot is free: one latency, not a wait behind the waiters
        elapsed = time.perf_counter() - t0
        [t.join() for t in [first, *waiters]]
        assert server.n_requests == 2
        assert elapsed < 1.75 * latency, elapsed


def test_eox_template_defaults_and_attribution(mini, context, tmp_path):
    row, ctx = context
    src = WmtsSource(cache_dir=tmp_path)
    assert src.url_template == EOX_URL and src.years == (2018, 2019, 2020, 2021)
    assert src.attribution == eox_attribution(2018, 2019, 2020, 2021)
    assert src.attribution.endswith("(Contains modified Copernicus Sentinel data 2018, 2019, 2020, 2021)")
    assert src.url(10, 616, 510, 2021).endswith("TileMatrix=10&TileCol=616&TileRow=510")
    src.close()
    # the EOX request shape, answered by our loopback server
    with TileServer(mini, fmt="png") as server:
        with WmtsSource(server.eox_template, cache_dir=tmp_path, rate_per_host=None) as src:
            img = np.asarray(src.tile(int(row.zoom), int(row.tile_col0) + 1, int(row.tile_row0), 2018))
    assert np.array_equal(img, ctx[0:128, 128:256].repeat(2, axis=0).repeat(2, axis=1))


def test_bad_templates_are_input_errors(tmp_path):
    from earthloc.errors import InputError

    with pytest.raises(InputError, match="lacks \\{y\\}"):
        WmtsSource("http://127.0.0.1:1/{z}/{x}.png", years=[2020], cache_dir=tmp_path)
    with pytest.raises(InputError, match="give the years"):
        WmtsSource("http://127.0.0.1:1/{year}/{z}/{x}/{y}.png", cache_dir=tmp_path)

"""DB build throughput and requests per DB image: earthloc's shared-tile builder vs the official-style downloader.

Both run against the same loopback tile server (tests/tileserver.py, in its own process) and write real
1024-px JPEG DB images with the same code (earthloc.db.build.build_db, same workers, same HTTP client
limits); they differ only in how tiles are obtained:

- **earthloc**: :class:`earthloc.sources.wmts.WmtsSource` (disk cache + single flight), so each tile is
  fetched once and shared by the up-to-4 overlapping DB images that contain it;
- **baseline**: every DB image fetches its 16 tiles, nothing shared or cached, like the official
  downloader.

The region is ``--side x --side`` places (stride 2) at z13: ``(2*side+2)**2`` distinct tiles, so
requests per image tend to 4 as the region grows (81 x 81 places: 4.099). The server answers each
request after ``--latency-ms`` (a remote tile service is tens of ms away; 0 = pure loopback, CPU-bound).
Tiles are real Sentinel-2-cloudless 256-px tiles from the iss_mini contexts, repeated to fill the region
(content is irrelevant to the throughput, only realistic JPEG sizes and decode costs matter).
The baseline's cost per image does not depend on the region, so it is timed on the first ``--baseline-images``.

Run: ``.venv/bin/python -m benchmarks.db_build [--record]`` (a few minutes on 2 cores); ``--record`` appends
the figures to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._record import record
from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.sources.wmts import WmtsSource, _decode

TILESERVER = Path(__file__).resolve().parent.parent / "tests" / "tileserver.py"


class UncachedWmts:
    """Official-downloader behaviour: one GET per tile per DB image, no cache, no sharing."""

    def __init__(self, template: str, concurrency: int):
        self.template = template
        self.years = (2018,)
        self._client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency,
                                                                    max_keepalive_connections=concurrency))

    def tile(self, z, x, y, year):
        resp = self._client.get(self.template.format(z=z, x=x, y=y, year=year))
        resp.raise_for_status()
        return _decode(resp.content)

    def close(self):
        self._client.close()


def _server(latency_ms: float) -> tuple[subprocess.Popen, str, str]:
    """Start tests/tileserver.py in its own process (a tile server is another machine, not our GIL)."""
    proc = subprocess.Popen([sys.executable, str(TILESERVER), "--port", "0", "--repeat", "12_1164_2526",
                             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.match(r"serving (\S+) and", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"tile server did not start: {line!r}")
    template = m.group(1)
    return proc, template, template.split("/tiles/")[0]


def _stats(base: str, reset: bool = False) -> dict:
    if reset:
        httpx.get(base + "/_reset")
    return json.loads(httpx.get(base + "/_stats").text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=81, help="region side in places (81 -> 6,561 images)")
    ap.add_argument("--baseline-images", type=int, default=600)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=8, help="images in parallel = HTTP requests in flight")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()

    blocks = [TileBlock(13, 3000 + 2 * i, 4000 + 2 * j) for i in range(args.side) for j in range(args.side)]
    tiles = {(2018, t.z, t.x, t.y) for b in blocks for t in b.tiles()}
    load0 = os.getloadavg()[0]
    proc, template, base_url = _server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="earthloc-bench-") as tmp:
            tmp = Path(tmp)
            n_base = min(args.baseline_images, len(blocks))
            _stats(base_url, reset=True)
            base = UncachedWmts(template, args.workers)
            t0, c0 = time.perf_counter(), time.process_time()
            build_db(base, blocks[:n_base], [2018], tmp / "baseline", workers=args.workers, progress=False)
            base_s, base_cpu = time.perf_counter() - t0, (time.process_time() - c0) / n_base * 1000
            base.close()
            base_rpi, base_ips = _stats(base_url)["n_requests"] / n_base, n_base / base_s

            _stats(base_url, reset=True)
            src = WmtsSource(template, years=[2018], cache_dir=tmp / "cache", concurrency=args.workers,
                             rate_per_host=None)
            t0, c0 = time.perf_counter(), time.process_time()
            build_db(src, blocks, [2018], tmp / "earthloc", workers=args.workers, progress=True)
            ours_s, ours_cpu = time.perf_counter() - t0, (time.process_time() - c0) / len(blocks) * 1000
            src.close()
            st = _stats(base_url)
            ours_rpi, ours_ips = st["n_requests"] / len(blocks), len(blocks) / ours_s
            assert st["n_requests"] == st["distinct"] == len(tiles), (st, len(tiles))
    finally:
        proc.kill()
        proc.wait()

    figures = (f"z13 region {args.side}x{args.side} places ({len(blocks)} images, {len(tiles)} tiles), "
               f"server in its own process, latency {args.latency_ms:g} ms, {args.workers} workers: "
               f"earthloc {ours_ips:.1f} img/s, {ours_rpi:.3f} req/img, {ours_cpu:.0f} CPU-ms/img; baseline (16 "
               f"tiles/img, no sharing; first {n_base} images) {base_ips:.1f} img/s, {base_rpi:.2f} req/img, "
               f"{base_cpu:.0f} CPU-ms/img; "
               f"throughput x{ours_ips / base_ips:.2f}, requests /{base_rpi / ours_rpi:.2f}; "
               f"load avg {load0:.1f} at start")
    print(figures)
    if args.record:
        record(figures)


if __name__ == "__main__":
    main()

"""DB build throughput and requests per DB image: earthloc's shared-tile builder vs the official-style downloader.

Both run in this process against the same loopback tile server (tests/tileserver.py) and write real
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

Run: ``.venv/bin/python -m benchmarks.db_build`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._record import record
from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.sources.mosaic import MosaicSource
from earthloc.sources.wmts import WmtsSource, _decode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tileserver import TileServer  # noqa: E402  (the reusable test server)


class RepeatingTiles:
    """Serves, for any z/x/y, the real tile (y mod 12, x mod 12) of one 12x12 context at its own zoom."""

    def __init__(self, mini: MosaicSource, context: str = "12_1164_2526"):
        self.m = next(m for m in mini.mosaics if m.path.stem == context)
        self.mini = mini
        self.years = (2018,)

    def covers(self, z, x, y, year) -> bool:
        return year == 2018

    def tile(self, z, x, y, year):
        return self.mini.tile(self.m.zoom, self.m.col0 + x % 12, self.m.row0 + y % 12, year)


class UncachedWmts:
    """Official-downloader behaviour: one GET per tile per DB image, no cache, no sharing."""

    def __init__(self, template: str, concurrency: int):
        self.template = template
        self.years = (2018,)
        self.requests = 0
        self._client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency,
                                                                    max_keepalive_connections=concurrency))

    def tile(self, z, x, y, year):
        self.requests += 1
        resp = self._client.get(self.template.format(z=z, x=x, y=y, year=year))
        resp.raise_for_status()
        return _decode(resp.content)

    def close(self):
        self._client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=81, help="region side in places (81 -> 6,561 images)")
    ap.add_argument("--baseline-images", type=int, default=600)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=8, help="images in parallel = HTTP requests in flight")
    args = ap.parse_args()

    blocks = [TileBlock(13, 3000 + 2 * i, 4000 + 2 * j) for i in range(args.side) for j in range(args.side)]
    tiles = {(2018, t.z, t.x, t.y) for b in blocks for t in b.tiles()}
    server = TileServer(RepeatingTiles(MosaicSource.from_iss_mini()), latency_s=args.latency_ms / 1000).start()
    for key in tiles:  # pre-encode every tile: both runs then measure fetching, not the server's encoder
        server.tile_bytes(key)
    with tempfile.TemporaryDirectory(prefix="earthloc-bench-") as tmp:
        tmp = Path(tmp)
        server.reset_counts()
        base = UncachedWmts(server.template, args.workers)
        t0 = time.perf_counter()
        build_db(base, blocks[: args.baseline_images], [2018], tmp / "baseline", workers=args.workers, progress=False)
        base_s = time.perf_counter() - t0
        base.close()
        base_n = min(args.baseline_images, len(blocks))
        base_rpi, base_ips = server.n_requests / base_n, base_n / base_s

        server.reset_counts()
        src = WmtsSource(server.template, years=[2018], cache_dir=tmp / "cache", concurrency=args.workers,
                         rate_per_host=None)
        t0 = time.perf_counter()
        build_db(src, blocks, [2018], tmp / "earthloc", workers=args.workers, progress=True)
        ours_s = time.perf_counter() - t0
        src.close()
        ours_rpi, ours_ips = server.n_requests / len(blocks), len(blocks) / ours_s
        assert server.n_requests == len(tiles), (server.n_requests, len(tiles))
    server.stop()

    figures = (f"z13 region {args.side}x{args.side} places ({len(blocks)} images, {len(tiles)} tiles), "
               f"server latency {args.latency_ms:g} ms, {args.workers} workers: earthloc {ours_ips:.1f} img/s, "
               f"{ours_rpi:.3f} req/img; baseline (16 tiles/img, no sharing; first {base_n} images) "
               f"{base_ips:.1f} img/s, {base_rpi:.2f} req/img; throughput x{ours_ips / base_ips:.2f}, "
               f"requests /{base_rpi / ours_rpi:.2f}")
    print(figures)
    record(figures)


if __name__ == "__main__":
    main()

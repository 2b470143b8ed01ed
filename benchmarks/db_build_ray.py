"""DB images per minute: ``db build --ray`` with 1, 2 and 4 Ray workers against the local build, same server, same run.

One loopback tile server in its own process (tests/tileserver.py, real Sentinel-2-cloudless tiles repeated,
``--latency-ms`` per request like a remote service) serves every run. Each run builds the same
``--side x --side`` z13 places into a fresh folder with a fresh tile cache, with the same cluster-wide
limits (``--concurrency`` requests in flight, no rate limit):

- **local**: :func:`earthloc.db.build.build_db`, ``--workers`` threads in this process;
- **ray N**: :func:`earthloc.db.ray_build.build_db_on_ray` on one local Ray with 4 logical CPUs, each task
  reserving ``4 / N`` of them, so N batches run at once in N worker processes (``--batch`` images per
  task, ``--workers`` images at once per task).

Ray starts once and its worker processes are warmed up on a few images first (neither is timed). Run: ``.venv/bin/python -m benchmarks.db_build_ray`` (a few
minutes on 2 cores); ``--record`` appends the figures to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

from benchmarks._record import record
from benchmarks.db_build import _server, _stats
from earthloc.db.build import build_db
from earthloc.db.ray_build import build_db_on_ray
from earthloc.geo.tiles import TileBlock
from earthloc.sources.spec import open_source
from earthloc.sources.wmts import WmtsSource

RAY_CPUS = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=12, help="region side in places (12 -> 144 images)")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight, whole cluster")
    ap.add_argument("--workers", type=int, default=8, help="images at once (local) / per Ray task")
    ap.add_argument("--batch", type=int, default=8, help="images per Ray task")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()

    blocks = [TileBlock(13, 3000 + 2 * i, 4000 + 2 * j) for i in range(args.side) for j in range(args.side)]
    n_tiles = len({t for b in blocks for t in b.tiles()})
    load0 = os.getloadavg()[0]
    proc, template, base_url = _server(args.latency_ms)
    per_min: dict[str, float] = {}
    req_per_tile: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="earthloc-bench-") as tmp:
            tmp = Path(tmp)

            def timed(name: str, build) -> None:
                _stats(base_url, reset=True)
                t0 = time.perf_counter()
                rep = build(tmp / name / "db", tmp / name / "cache")
                seconds = time.perf_counter() - t0
                assert rep.written == len(blocks), rep
                per_min[name] = rep.written / seconds * 60
                req_per_tile[name] = _stats(base_url)["n_requests"] / n_tiles
                print(f"{name}: {per_min[name]:.0f} img/min, {req_per_tile[name]:.3f} requests per tile", flush=True)

            def local(out: Path, cache: Path):
                with WmtsSource(template, years=[2018], cache_dir=cache, concurrency=args.concurrency,
                                rate_per_host=None) as src:
                    return build_db(src, blocks, [2018], out, workers=args.workers, progress=False)

            timed("local", local)
            import ray

            # one Ray for every run (build_db_on_ray joins it): its start-up is not what we time
            ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            try:
                warm = functools.partial(open_source, "wmts:" + template, years=[2018], cache_dir=tmp / "warm",
                                         rate_per_host=None)
                # start the worker processes (imports, first connections) before timing anything
                build_db_on_ray(warm, blocks[:RAY_CPUS * 2], [2018], tmp / "warm-db", batch=1, progress=False)
                for n in (1, 2, 4):
                    def on_ray(out: Path, cache: Path, n: int = n):
                        recipe = functools.partial(open_source, "wmts:" + template, years=[2018], cache_dir=cache,
                                                   concurrency=args.concurrency, rate_per_host=None)
                        return build_db_on_ray(recipe, blocks, [2018], out, rate_per_host=None,
                                               concurrency=args.concurrency, batch=args.batch, threads=args.workers,
                                               cpus_per_task=RAY_CPUS // n, progress=False)

                    timed(f"ray{n}", on_ray)
            finally:
                ray.shutdown()
    finally:
        proc.kill()
        proc.wait()

    ratios = ", ".join(f"{n} workers {per_min[f'ray{n}']:.0f} img/min (x{per_min[f'ray{n}'] / per_min['local']:.2f}, "
                       f"{req_per_tile[f'ray{n}']:.3f} req/tile)" for n in (1, 2, 4))
    figures = (f"z13 region {args.side}x{args.side} places ({len(blocks)} images, {n_tiles} tiles), server in its own "
               f"process, latency {args.latency_ms:g} ms, {args.concurrency} requests in flight for the whole build: "
               f"local build ({args.workers} threads) {per_min['local']:.0f} img/min "
               f"({req_per_tile['local']:.3f} req/tile); Ray on {os.cpu_count()} cores, batch {args.batch}: {ratios}; "
               f"load avg {load0:.1f} at start (shared machine: pessimistic)")
    print(figures)
    if args.record:
        record(figures)


if __name__ == "__main__":
    main()

"""STAC composites: windowed COG reads (earthloc) vs a baseline that downloads whole scenes, same server, same run.

A loopback STAC API + range-request COG server (tests/stacserver.py, in this process) serves ``--dates``
scenes of one real Sentinel-2-cloudless context (iss_mini 12_1164_2526: 12x12 z12 tiles, 1536 px,
Web-Mercator) turned into L2A-like B04/B03/B02 COGs (uint16, deflate, 256-px blocks, overviews) plus a
2x coarser SCL, with clouds painted into half of the dates and marked in SCL. The DB places are 4x4
blocks at ``--zoom`` inside it (z12: 25 places, each 1/9 of a scene; z13: 121, each 1/36), spread
evenly, ``--places`` of them, each rendered at 1024 px.

- **earthloc**: :class:`earthloc.sources.stac.StacSource`: per place, the COG header and the blocks
  under the place are range-read (about 1/9 of each scene here);
- **baseline**: the same source and median code, but every asset of every item is downloaded whole
  (one GET each) and read from local disk, as a "download the scenes, then composite" pipeline does.

Prints composites per minute and bytes / requests per DB image for both, the ratio last; ``--record``
appends a row to docs/benchmarks.md. Run: ``.venv/bin/python -m benchmarks.stac`` (about a minute).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mercantile
import numpy as np
import odc.stac
from PIL import Image
from rasterio.transform import from_origin

from benchmarks._record import record
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.stac import _PYSTAC_LOCK, Budget, StacSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stacserver import StacServer, scene_from_array, to_dn  # noqa: E402 (test helper, not a package)

CONTEXT, Z, ROW0, COL0 = "12_1164_2526", 12, 1160, 2522


class WholeSceneSource(StacSource):
    """Baseline: download each asset whole (one GET), then composite from local files with the same code."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._dir = tempfile.TemporaryDirectory(prefix="stac-whole-")
        self._client = httpx.Client(timeout=60)

    def _load(self, items, bands, gbox, budget: Budget):
        local = []
        for it in items:
            it = it.clone()
            for key in bands:
                href = it.assets[key].href
                path = Path(self._dir.name) / f"{len(os.listdir(self._dir.name))}_{Path(href).name}"
                data = self._client.get(href).raise_for_status().content
                budget.spend(len(data), where=href)
                path.write_bytes(data)
                it.assets[key].href = str(path)
            local.append(it)
        with _PYSTAC_LOCK:
            return odc.stac.load(local, bands=bands, geobox=gbox, groupby="solar_day",
                                 chunks={"x": gbox.shape.x, "y": gbox.shape.y},
                                 resampling={bands[-1]: "nearest", "*": "bilinear"})

    def close(self) -> None:
        super().close()
        self._client.close()
        self._dir.cleanup()


def make_scenes(n_dates: int) -> list:
    """``n_dates`` scenes of the real context; clouds (SCL 9) painted into every other date."""
    path = next(c.path for c in IssMini.open().contexts() if c.path.stem == CONTEXT)
    img = np.asarray(Image.open(path).convert("RGB"))
    m_tile = 2 * math.pi * 6378137 / 2**Z
    nw = mercantile.xy_bounds(COL0, ROW0, Z)
    px = m_tile / (img.shape[0] / 12)
    rng = np.random.default_rng(0)
    scenes = []
    for d in range(n_dates):
        rgb, scl = img.copy(), np.full((img.shape[0] // 2, img.shape[1] // 2), 4, np.uint8)
        if d % 2:
            yy, xx = np.mgrid[: scl.shape[0], : scl.shape[1]]
            for _ in range(6):
                cy, cx, r = rng.integers(0, scl.shape[0], 2).tolist() + [int(rng.integers(30, 120))]
                cloud = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                scl[cloud] = 9
                rgb[np.kron(cloud, np.ones((2, 2), bool))] = 250
        scenes.append(scene_from_array(f"S2_{d:02d}", datetime(2022, 3 + d, 1, 10, tzinfo=UTC), 10.0 + d,
                                       "EPSG:3857", from_origin(nw.left, nw.top, px, px), to_dn(rgb), scl,
                                       from_origin(nw.left, nw.top, 2 * px, 2 * px), px * 0.48))
    return scenes


def run(cls, url: str, places: list[TileBlock], workers: int) -> dict:
    src = cls(url, years=[2022], workers=workers, max_items=32)
    t0 = time.perf_counter()
    try:
        for p in places:
            src.composite(p, 2022)
    finally:
        src.close()
    dt = time.perf_counter() - t0
    tot = src.totals
    return {"per_min": len(places) / dt * 60, "bytes": tot["bytes"] / len(places),
            "requests": tot["requests"] / len(places), "seconds": dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dates", type=int, default=4, help="scenes (dates) per place")
    ap.add_argument("--zoom", type=int, default=12, choices=(12, 13, 14), help="zoom of the DB places")
    ap.add_argument("--places", type=int, default=6, help="places composited per mode")
    ap.add_argument("--workers", type=int, default=4, help="reads in flight per place")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server delay per file request")
    ap.add_argument("--record", action="store_true", help="append a row to docs/benchmarks.md")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    scenes = make_scenes(args.dates)
    scene_mb = sum(len(f[1]) for s in scenes for f in s.files.values()) / 1e6
    k = 2 ** (args.zoom - Z)  # the context spans 12*k tiles at the places' zoom
    grid = [TileBlock(args.zoom, ROW0 * k + r, COL0 * k + c) for r in range(0, 12 * k - 3, 2)
            for c in range(0, 12 * k - 3, 2)]
    places = [grid[i] for i in np.linspace(0, len(grid) - 1, min(args.places, len(grid))).astype(int)]
    with StacServer(scenes, page_size=100, latency_s=args.latency_ms / 1000) as srv:
        run(StacSource, srv.url, places[:1], args.workers)  # warm-up: imports, GDAL, first connections
        ours = run(StacSource, srv.url, places, args.workers)
        base = run(WholeSceneSource, srv.url, places, args.workers)
    speed, less = ours["per_min"] / base["per_min"], base["bytes"] / ours["bytes"]
    line = (f"{len(places)} z{args.zoom} places x {args.dates} dates (real context {CONTEXT}, 1536-px scenes, "
            f"{scene_mb:.1f} MB of COGs), loopback + {args.latency_ms:.0f} ms per file request, "
            f"{args.workers} reads in flight: "
            f"earthloc {ours['per_min']:.1f} composites/min, {ours['bytes'] / 1e6:.2f} MB and "
            f"{ours['requests']:.0f} requests per DB image; baseline (whole scenes) {base['per_min']:.1f}/min, "
            f"{base['bytes'] / 1e6:.2f} MB, {base['requests']:.0f} requests per DB image; load avg {load0:.1f} "
            f"at start; ratio x{speed:.2f} composites/min, bytes /{less:.1f}")
    print(line)
    if args.record:
        record(line)


if __name__ == "__main__":
    main()

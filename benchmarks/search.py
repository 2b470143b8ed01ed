"""Search at global scale: visible-disk search with query-side rotations vs the official flat L2 over
the 4x rotated DB, per photo, in the same run; index bytes per place per precision; the recall cost
of fp16 / PQ on real descriptors.

- Places: 161,496 of the DB grid's land places at zooms 9/10/11 (``earthloc.db.grid.places``; a
  seeded random subset down to the official count). Descriptors: random 4096-d unit vectors (timing
  does not depend on their values). Photos: real ISS nadirs from ``earthloc_meta/queries.csv``.
- Ours: visible disk of each nadir (``earthloc.locate.disk_mask``, default altitude, to the horizon),
  then the exact search of :meth:`earthloc.index.store.Index.search` with the photo at 4 rotations
  against a 1x fp32 index (bf16 scan + fp32 re-score, :mod:`earthloc.index.scan`; its in-RAM bf16
  shadow is made once before timing, and its time is printed). Timed per photo: disk mask + search.
- Official way: FAISS exhaustive L2 kNN (k=100) of the unrotated photo over 4 x 161,496 vectors. The
  4x DB is 10.6 GB in fp32, too much for this shared 24 GB machine, so FAISS is timed over 1x and
  0.5x of the 1x DB (2.6 / 1.3 GB, linear scan: time is linear in N) and extrapolated x4; the
  extrapolation and both points are printed.
- Recall cost: the demo index (``out/demo/index``, lite0-gem 1280-d descriptors of real Sentinel-2
  images; built by ``earthloc demo`` if missing) re-encoded as fp16 and PQ (8 dims per byte, as
  for 4096-d); queries = the 32 ISS photos at 4 rotations (whole index) and 500 DB images;
  recall@10 = share of the exact fp32 top 10 that the approximate index returns in its top 10.

Run: ``nice .venv/bin/python -m benchmarks.search`` (about 5 minutes on 2 cores, 5 GB RAM).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from benchmarks._record import record
from earthloc.config import data_dir
from earthloc.index.formats import ROTATIONS
from earthloc.index.identity import ModelIdentity
from earthloc.index.order import geo_order
from earthloc.index.store import Index

N_PLACES = 161_496
DIM = 4096
CHUNK = 8192


def global_manifest(rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """161,496 real grid places (zooms 9-11, land, |lat| <= 60), geo-cell ordered; and the grid's size."""
    from earthloc.db.grid import places

    blocks = places()
    n_grid = len(blocks)
    pick = np.sort(rng.choice(len(blocks), N_PLACES, replace=False)) if len(blocks) > N_PLACES else np.arange(len(blocks))
    blocks = [blocks[i] for i in pick]
    lat = np.array([b.lonlat_box_centre[0] for b in blocks])
    lon = np.array([b.lonlat_box_centre[1] for b in blocks])
    df = pd.DataFrame({"tile": [b.name for b in blocks], "year": 2021, "path": "", "sha256": "",
                       "centre_lat": lat, "centre_lon": lon})
    return df.iloc[geo_order(lat, lon)].reset_index(drop=True), n_grid


def random_index(manifest: pd.DataFrame, rng: np.random.Generator) -> Index:
    """A 1x fp32 index of random unit vectors, filled chunk by chunk (no second copy in memory)."""
    flat = faiss.IndexFlatIP(DIM)
    for a in range(0, len(manifest), CHUNK):
        x = rng.standard_normal((min(CHUNK, len(manifest) - a), DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        flat.add(x)
    ident = ModelIdentity("random-4096", None, DIM, 320, "none")
    return Index.from_faiss(flat, manifest, ident, "query", "fp32")


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal((*shape, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def time_interleaved(index: Index, nadirs: np.ndarray, rounds: int, rng: np.random.Generator,
                     xb: np.ndarray | None = None):
    """Per-photo seconds of the visible-disk search (mask + search, k=100, 4 query rotations) and of
    the flat L2 kNN (k=100, one unrotated photo) over ``xb`` (default: the whole 1x DB), alternated in
    ``rounds`` so that both see the same machine load. Returns (disk seconds, disk sizes, flat seconds)."""
    from earthloc.locate import disk_mask

    xb = index.vectors(0, index.faiss.ntotal) if xb is None else xb  # default: the 1x fp32 vectors, a view
    q = unit(rng, len(nadirs), 4)
    index.search(q[:1], 100)  # warm up BLAS threads
    faiss.knn(q[0, :1], xb, 100, metric=faiss.METRIC_L2)
    secs, sizes, flat = [], [], []
    for part in np.array_split(np.arange(len(nadirs)), rounds):
        t = time.perf_counter()
        faiss.knn(q[part[0], :1], xb, 100, metric=faiss.METRIC_L2)
        flat.append(time.perf_counter() - t)
        for i in part:
            t = time.perf_counter()
            mask = disk_mask(index, tuple(nadirs[i]))  # default ISS altitude, whole disk to the horizon
            index.search(q[i][None], 100, mask=mask, query_rotations=ROTATIONS)
            secs.append(time.perf_counter() - t)
            sizes.append(int(mask.sum()))
    return np.array(secs), np.array(sizes), np.array(flat)


def time_flat_l2(xb: np.ndarray, n_queries: int, rng: np.random.Generator) -> float:
    """Seconds per photo of FAISS exhaustive L2 kNN (k=100), one photo at a time, over ``xb``."""
    q = unit(rng, n_queries)
    faiss.knn(q[:1], xb, 100, metric=faiss.METRIC_L2)
    t = time.perf_counter()
    for i in range(n_queries):
        faiss.knn(q[i:i + 1], xb, 100, metric=faiss.METRIC_L2)
    return (time.perf_counter() - t) / n_queries


def bytes_per_place(rng: np.random.Generator) -> dict[str, float]:
    """Serialized bytes per place at 4096-d: (size(2n) - size(n)) / n, plus fixed bytes over 161,496 places."""
    from earthloc.index.formats import new_faiss as _new_faiss

    x = unit(rng, 4096)
    out = {}
    for prec in ("fp32", "fp16", "pq"):
        ix = _new_faiss(DIM, prec, x[:256])  # PQ trained on the minimum 256 points: enough to measure its size
        ix.add(x[:2048])
        s1 = faiss.serialize_index(ix).nbytes
        ix.add(x[2048:])
        s2 = faiss.serialize_index(ix).nbytes
        per = (s2 - s1) / 2048
        out[prec] = per + (s1 - 2048 * per) / N_PLACES
    out["fp32 4x (official)"] = 4 * out["fp32"]
    return out


def recall_cost(out_dir: Path) -> dict[str, dict[str, float]]:
    """Recall@10 (and top-1 agreement) of fp16 / PQ against exact fp32, on real descriptors."""
    from earthloc.demo import run_demo
    from earthloc.pipeline import open_locator
    from earthloc.sources.iss_mini import IssMini

    if not (out_dir / "index" / "index.json").is_file():
        run_demo(out_dir, progress=False)
    locator = open_locator(out_dir / "index", "lite0-gem")
    exact = locator.index
    vecs = exact.vectors(0, exact.faiss.ntotal)[:, None, :]
    photos = [p for p in IssMini.open().photos() if p.path]
    qphotos = locator.encode([p.path for p in photos])  # (32, 4, D)
    rng = np.random.default_rng(5)
    qdb = vecs[rng.choice(len(vecs), min(500, len(vecs)), replace=False)]  # (500, 1, D)
    res = {}
    want_p = exact.search(qphotos, 10)
    want_d = exact.search(qdb, 10)
    for prec in ("fp16", "pq"):
        approx = Index.from_vectors(vecs, exact.manifest, exact.identity, "query", prec)
        rows = {tuple(r) for r in exact.manifest[["tile", "year"]].itertuples(index=False)}
        assert len(rows) == len(exact)  # same manifest order (from_vectors keeps geo order)
        r = {}
        for name, q, want in (("photos", qphotos, want_p), ("db", qdb, want_d)):
            got = approx.search(q, 10)
            rec = [len({h.row for h in g} & {h.row for h in w}) / len(w) for g, w in zip(got, want)]
            top1 = [g[0].row == w[0].row for g, w in zip(got, want)]
            r[name] = (float(np.mean(rec)), float(np.mean(top1)))
        res[prec] = r
    return res, exact.dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=200, help="real nadirs to time (default 200)")
    ap.add_argument("--flat-queries", type=int, default=8, help="photos timed for the flat baseline")
    ap.add_argument("--demo-dir", type=Path, default=Path("out/demo"), help="demo folder with a real index")
    ap.add_argument("--full-4x", action="store_true",
                    help="also hold the real 4x DB (10.6 GB more RAM) and time flat L2 over all of it")
    ap.add_argument("--nadirs", type=Path, default=None,
                    help="CSV with nadir_lat/nadir_lon (default: ../shared/data/earthloc_meta/queries.csv)")
    ap.add_argument("--skip-recall", action="store_true", help="skip the recall cost (needs the demo index + torch)")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")

    t = time.perf_counter()
    manifest, n_grid = global_manifest(rng)
    index = random_index(manifest, rng)
    print(f"global index: {len(index):,} places (of the grid's {n_grid:,}) x {DIM}-d fp32 = {index.faiss.ntotal * DIM * 4 / 1e9:.2f} GB "
          f"(built in {time.perf_counter() - t:.0f} s)")

    t = time.perf_counter()
    shadow = index.shadow()  # made once per opened index (else on its first search); not part of per-photo time
    print(f"bf16 shadow for the two-stage exact scan: {time.perf_counter() - t:.1f} s, "
          f"{shadow.hi.numel() * 2 / 1e9:.2f} GB RAM, error bound {shadow.eps:.4f} per unit vector")

    q = pd.read_csv(args.nadirs or data_dir() / "earthloc_meta" / "queries.csv", usecols=["nadir_lat", "nadir_lon"]).dropna()
    nadirs = q.sample(args.photos, random_state=1).to_numpy()
    x4 = None
    if args.full_4x:  # the real 4x DB in RAM (10.6 GB), timed against the disk search in the same loop
        x4 = np.empty((4 * len(manifest), DIM), dtype=np.float32)
        for a in range(0, len(x4), CHUNK):  # written, so every page is real memory
            x4[a:a + CHUNK] = rng.random((min(CHUNK, len(x4) - a), DIM), dtype=np.float32)
    secs, sizes, flat = time_interleaved(index, nadirs, args.flat_queries, rng, x4)
    print(f"visible-disk search (4 query rotations, exact fp32, k=100) over {len(nadirs)} real ISS nadirs: "
          f"mean {1e3 * secs.mean():.1f} ms, median {1e3 * np.median(secs):.1f} ms, p95 {1e3 * np.percentile(secs, 95):.1f} ms "
          f"per photo; DB images searched: median {int(np.median(sizes)):,}, max {sizes.max():,} "
          f"({100 * np.median(sizes) / len(index):.1f}% / {100 * sizes.max() / len(index):.1f}% of the index)")
    xb = index.vectors(0, index.faiss.ntotal)
    t_half = time_flat_l2(xb[: len(xb) // 2], 2, rng)
    if x4 is not None:
        t_4x = float(flat.mean())
        t_full = time_flat_l2(xb, 2, rng)
        print(f"official flat L2 (FAISS exhaustive, k=100, 1 photo) over the full 4x DB ({len(x4):,} vectors, "
              f"{x4.nbytes / 1e9:.1f} GB): {t_4x:.2f} s (mean of {len(flat)} timed between the disk searches); "
              f"over 1x: {t_full:.3f} s, over 0.5x: {t_half:.3f} s")
    else:
        t_full = float(flat.mean())
        t_4x = 4 * t_full
        print(f"official flat L2 (FAISS exhaustive, k=100, 1 photo): {t_full:.3f} s over {len(xb):,} vectors (mean of "
              f"{len(flat)} timed between the disk searches; {t_half:.3f} s over half of them: linear in N) -> "
              f"{t_4x:.2f} s extrapolated to the 4x rotated DB ({4 * len(xb):,} vectors, 10.6 GB)")
    del xb, index, x4
    gc.collect()

    bpp = bytes_per_place(rng)
    print("index bytes per place at 4096-d: " + ", ".join(f"{k} {v:,.0f}" for k, v in bpp.items()))

    rec, dim = recall_cost(args.demo_dir) if not args.skip_recall else ({}, 0)
    for prec, r in rec.items():
        print(f"{prec} on real lite0-gem descriptors ({dim}-d, demo DB): recall@10 of exact top 10 = "
              f"{100 * r['photos'][0]:.1f}% (32 ISS photos), {100 * r['db'][0]:.1f}% (500 DB images); "
              f"same top 1: {100 * r['photos'][1]:.0f}% / {100 * r['db'][1]:.0f}%")

    speedup = t_4x / secs.mean()
    how = "measured on the full 4x DB" if args.full_4x else f"measured 1x {t_full:.3f} s, x4 extrapolated"
    figures = (f"161,496 places x 4096-d: visible-disk search 4 rot {1e3 * secs.mean():.1f} ms/photo mean "
               f"(p95 {1e3 * np.percentile(secs, 95):.1f}, median {int(np.median(sizes)):,} images searched) vs flat L2 "
               f"over 4x DB {t_4x:.2f} s/photo ({how}) = {speedup:.1f}x; "
               f"bytes/place fp32 {bpp['fp32']:,.0f}, fp16 {bpp['fp16']:,.0f}, pq {bpp['pq']:,.0f}, official 4x "
               f"{bpp['fp32 4x (official)']:,.0f}")
    if rec:
        figures += (f"; recall@10 photos/db fp16 {100 * rec['fp16']['photos'][0]:.0f}/{100 * rec['fp16']['db'][0]:.0f}%, "
                    f"pq {100 * rec['pq']['photos'][0]:.0f}/{100 * rec['pq']['db'][0]:.0f}% (real {dim}-d descriptors)")
    if args.record:
        record(figures, command="python -m benchmarks.search " + " ".join(a for a in __import__("sys").argv[1:]))
    print(figures)
    print(f"speed-up of the visible-disk search over the official flat L2 per photo: {speedup:.1f}x "
          f"({1e3 * secs.mean():.1f} ms vs {t_4x:.2f} s, {how})")


if __name__ == "__main__":
    main()

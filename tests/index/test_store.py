"""Index store: exact masked search vs FAISS brute force, rotation merge, persistence and identity checks.

Places are the 8,475 real 2021 DB tiles of the official EarthLoc dataset (earthloc_meta); descriptors
here are random unit vectors (real descriptors are used in tests/test_locate.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import faiss
import numpy as np
import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.geo.footprint import haversine_km
from earthloc.index.formats import ROTATIONS
from earthloc.index.identity import ModelIdentity
from earthloc.index.store import Index

DIM = 64


@pytest.fixture(scope="module")
def manifest(shared_data) -> pd.DataFrame:
    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    return pd.DataFrame({
        "tile": [f"{z:02d}_{r:04d}_{c:04d}" for z, r, c in zip(df.zoom, df.tile_row, df.tile_col)],
        "year": df.year, "path": df.original_name, "sha256": [f"h{i}" for i in range(len(df))],
        "centre_lat": df.center_lat, "centre_lon": df.center_lon,
    })


def unit(rng, *shape) -> np.ndarray:
    v = rng.standard_normal((*shape, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


IDENT = ModelIdentity("toy", None, DIM, 32, "resize 32x32, RGB, ImageNet mean/std")


def brute_force(index: Index, q: np.ndarray, qrot, mask: np.ndarray | None, k: int):
    """FAISS exhaustive search over every vector, then the mask filter, then the per-row max merge."""
    flat = faiss.IndexFlatIP(DIM)
    flat.add(np.vstack([index.vectors(i, i + 1) for i in range(index.faiss.ntotal)]))
    nd = len(index.db_rotations)
    scores, ids = flat.search(q, flat.ntotal)  # (R, ntotal) each
    best: dict[int, tuple[float, int]] = {}
    for r, (srow, irow) in enumerate(zip(scores, ids)):
        for s, vid in zip(srow, irow):
            row, d = divmod(int(vid), nd)
            if mask is not None and not mask[row]:
                continue
            rot = (index.db_rotations[d] - qrot[r]) % 360
            if row not in best or s > best[row][0]:
                best[row] = (float(s), rot)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [(row, rot, s) for row, (s, rot) in ranked]


@pytest.mark.parametrize("rotations", ["query", "db"])
def test_disk_search_equals_brute_force_then_filter(manifest, rotations):
    rng = np.random.default_rng(1)
    nd = 1 if rotations == "query" else 4
    index = Index.from_vectors(unit(rng, len(manifest), nd), manifest, IDENT, rotations)
    lat, lon = index.centre_lat, index.centre_lon
    for nadir in [(35.0, 135.0), (0.0, 20.0), (-30.0, 140.0)]:  # (this tile list leaves out the test areas)
        mask = haversine_km(nadir[0], nadir[1], lat, lon) <= 2300.0
        assert 50 < mask.sum() < len(mask) / 2
        qrot = ROTATIONS if rotations == "query" else (0,)
        q = unit(rng, len(qrot))
        got = index.search(q[None], k=20, mask=mask, query_rotations=qrot)[0]
        want = brute_force(index, q, qrot, mask, 20)
        assert [(h.row, h.rotation_deg) for h in got] == [(r, rot) for r, rot, _ in want]
        np.testing.assert_allclose([h.score for h in got], [s for *_, s in want], rtol=0, atol=1e-5)
        assert all(mask[h.row] for h in got)
    # no mask = brute force over everything
    q = unit(rng, 1 if rotations == "db" else 4)
    got = index.search(q[None], k=5)[0]
    want = brute_force(index, q, (0,) if rotations == "db" else ROTATIONS, None, 5)
    assert [h.row for h in got] == [r for r, *_ in want]


def test_rotation_of_best_match_and_merge(manifest):
    rng = np.random.default_rng(2)
    # 1x index, photo at 0/90/180/270: the photo rotated by 90 deg ccw equals DB row 7 ->
    # the DB image must be rotated by -90 = 270 deg to look like the photo.
    db = unit(rng, len(manifest), 1)
    index = Index.from_vectors(db, manifest, IDENT, "query")
    target = index.vectors(7, 8)[0]
    q = unit(rng, 4)
    q[1] = target
    hits = index.search(q[None], k=10)[0]
    assert hits[0].row == 7 and hits[0].rotation_deg == 270 and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert len({h.row for h in hits}) == len(hits)  # one hit per DB image, rotations merged
    # 4x index: DB row 3 at 180 deg equals the photo -> rotation 180; its other rotations merged away
    db4 = unit(rng, len(manifest), 4)
    index4 = Index.from_vectors(db4, manifest, IDENT, "db")
    q = index4.vectors(3 * 4 + 2, 3 * 4 + 3).copy()
    hits = index4.search(q[None], k=10)[0]
    assert (hits[0].row, hits[0].rotation_deg) == (3, 180)
    assert [h.row for h in hits].count(3) == 1


def test_save_open_roundtrip_and_checks(manifest, tmp_path):
    rng = np.random.default_rng(3)
    index = Index.from_vectors(unit(rng, len(manifest), 1), manifest, IDENT, "query")
    index.save(tmp_path / "ix")
    model = SimpleNamespace(name="toy", checkpoint_hash=None, descriptor_dim=DIM, image_size=32)
    back = Index.open(tmp_path / "ix", model=model)
    q = unit(rng, 4)[None]
    assert back.search(q, 10) == index.search(q, 10)
    assert back.manifest.tile.tolist() == index.manifest.tile.tolist()
    assert len(back) == len(manifest) and back.model_name == "toy"

    other = SimpleNamespace(name="lite0-gem", checkpoint_hash=None, descriptor_dim=DIM, image_size=32)
    with pytest.raises(InputError, match="built with model 'toy'"):
        Index.open(tmp_path / "ix", model=other)
    with pytest.raises(InputError, match="not an index folder"):
        Index.open(tmp_path)
    # a manifest that does not belong to the vectors
    m = pd.read_parquet(tmp_path / "ix" / "manifest.parquet")
    m.iloc[[0, 1]] = m.iloc[[1, 0]].to_numpy()
    m.to_parquet(tmp_path / "ix" / "manifest.parquet", index=False)
    with pytest.raises(InputError, match="manifest.parquet: does not match"):
        Index.open(tmp_path / "ix")
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="format version"):
        Index.open(tmp_path / "ix")


@pytest.mark.parametrize("precision,nbytes", [("fp32", 4 * DIM), ("fp16", 2 * DIM), ("pq", DIM // 8)])
def test_precisions_code_size_and_self_retrieval(manifest, precision, nbytes, tmp_path):
    rng = np.random.default_rng(4)
    vecs = unit(rng, len(manifest), 1)
    index = Index.from_vectors(vecs, manifest, IDENT, "query", precision)
    assert index.faiss.code_size == nbytes
    index.save(tmp_path / precision)
    index = Index.open(tmp_path / precision)
    rows = [0, 100, 4000]
    q = np.stack([np.repeat(index.vectors(r, r + 1), 4, axis=0) for r in rows])  # decoded stored vectors
    for r, hits in zip(rows, index.search(q, 3)):
        assert hits[0].row == r
    with pytest.raises(InputError, match="precision"):
        Index.from_vectors(vecs, manifest, IDENT, "query", "int4")


def test_search_pool_uses_every_cpu_even_when_made_under_single_threaded_blas():
    """The pool is first made while BLAS/OpenMP are limited to one thread; it must still get one worker per
    usable CPU (a 1-thread pool made the disk search ~1.6x slower). A fresh interpreter, so the pool is new."""
    code = ("import os\nfrom threadpoolctl import threadpool_limits\nfrom earthloc.index.store import search_threads\n"
            "with threadpool_limits(limits=1):\n    n = search_threads()\nprint(n, len(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got, cpus = map(int, out.stdout.split())
    assert got == cpus >= 1

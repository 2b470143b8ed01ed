"""Two-stage exact scan: the bf16 error bound holds, and near-ties below bf16 resolution still rank by fp32."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from earthloc.index.identity import ModelIdentity
from earthloc.index.scan import BUCKETS, bounds, make_shadow
from earthloc.index.store import Index


def _vectors(rng, n, d):
    """Unit vectors of several shapes: dense Gaussian, sparse, one dominant component, near-duplicates."""
    dense = rng.standard_normal((n, d))
    sparse = dense * (rng.random((n, d)) < 0.05)
    peaked = dense.copy()
    peaked[:, 0] += 30
    dup = np.repeat(dense[:1], n, axis=0) + 1e-5 * rng.standard_normal((n, d))
    v = np.vstack([dense, sparse, peaked, dup]).astype(np.float32)
    v[~v.any(axis=1), 0] = 1
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("d", [64, 4096])
def test_bf16_intervals_hold_the_exact_scores(d):
    rng = np.random.default_rng(d)
    v = _vectors(rng, 500, d)
    q = _vectors(rng, 4, d)[[0, 4, 8, 12]]  # 4 "rotations" of different kinds
    sh = make_shadow(v)
    assert sh.hi.shape == v.shape and 0.99 < sh.vmax < 1.01
    ranges = [(0, 7), (9, 700), (700, len(v))]  # short, bucket-padded, and at the end of the matrix
    lo, up = bounds(sh, q, ranges)
    exact = np.vstack([v[a:b] for a, b in ranges]).astype(np.float64) @ q.T.astype(np.float64)
    assert lo.shape == exact.shape == (len(v) - 2, 4)
    assert (lo <= exact).all() and (exact <= up).all()
    assert (up - lo).max() < 0.02 and np.median(up - lo) < 0.01  # useful: a few bf16 ulps wide, not vacuous
    assert len(BUCKETS) < 40 and BUCKETS[0] == 64 and BUCKETS[-1] == 65536


def test_near_ties_below_bf16_resolution_rank_by_fp32():
    """Rows that differ by 1e-5 (bf16 resolves ~4e-3) come back in their exact order, like brute force."""
    rng = np.random.default_rng(3)
    d, n = 256, 3000
    v = rng.standard_normal((n, d)).astype(np.float32)
    base, w = v[0] / np.linalg.norm(v[0]), rng.standard_normal(d).astype(np.float32)
    w -= (w @ base) * base
    w /= np.linalg.norm(w)
    near = rng.permutation(n)[:40]  # 40 rows: base + i * 2e-5 * w, scattered over the index
    for i, row in enumerate(near):
        v[row] = base + i * 2e-5 * w
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = (base + 0.5 * w) / np.linalg.norm(base + 0.5 * w)
    manifest = pd.DataFrame({"tile": [f"t{i}" for i in range(n)], "year": 2021, "path": "", "sha256": "",
                             "centre_lat": np.linspace(-50, 50, n), "centre_lon": np.zeros(n)})
    index = Index.from_vectors(v[:, None], manifest, ModelIdentity("toy", None, d, 32, "none"))
    got = [index.manifest.tile[h.row] for h in index.search(q[None, None].astype(np.float32), k=25)[0]]
    flat = faiss.IndexFlatIP(d)
    flat.add(v)
    _, ids = flat.search(q[None].astype(np.float32), 25)
    assert got == [f"t{i}" for i in ids[0]]
    assert got == [f"t{row}" for row in near[::-1][:25]]  # the planted order, highest i first

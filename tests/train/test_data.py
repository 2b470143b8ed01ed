"""Clustered batches and year slots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from earthloc.geo.tiles import TileBlock
from earthloc.train.data import ClusterBatches, TrainRegion, pick_years


@pytest.fixture(scope="module")
def context_features(shared_data) -> np.ndarray:
    """Colour histograms (8 bins x RGB) of the 190 real iss_mini contexts: real, varied features."""
    feats = []
    for f in sorted((shared_data / "iss_mini" / "contexts").glob("*.jpg")):
        a = np.asarray(Image.open(f).convert("RGB").resize((64, 64))).reshape(-1, 3)
        h = np.concatenate([np.histogram(a[:, c], bins=8, range=(0, 256))[0] for c in range(3)])
        feats.append(h / np.linalg.norm(h))
    return np.asarray(feats, dtype=np.float32)


def test_every_batch_comes_from_one_cluster(context_features):
    n = len(context_features)
    cb = ClusterBatches(n, batch_regions=8, n_clusters=6, seed=0)
    cb.fit(context_features)
    assert len(np.unique(cb.assignment)) > 1
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        ids = cb.next_batch(rng)
        assert 2 <= len(ids) <= 8 and len(set(ids.tolist())) == len(ids)
        assert len(set(cb.assignment[ids].tolist())) == 1
        seen.add(int(cb.assignment[ids[0]]))
    assert len(seen) > 1
    # Uniform sampling (the ablation) mixes clusters.
    off = ClusterBatches(n, batch_regions=8, n_clusters=6, clustered=False, seed=0)
    off.assignment = cb.assignment
    assert any(len(set(cb.assignment[off.next_batch(rng)].tolist())) > 1 for _ in range(20))


def test_kmeans_groups_similar_features(context_features):
    # The features and their negatives (opposite on the unit sphere): k=2 must split them exactly.
    x = np.concatenate([context_features, -context_features]).astype(np.float32)
    cb = ClusterBatches(len(x), batch_regions=8, n_clusters=2, seed=0)
    cb.fit(x)
    a, b = cb.assignment[: len(x) // 2], cb.assignment[len(x) // 2:]
    assert len(set(a.tolist())) == 1 and len(set(b.tolist())) == 1 and a[0] != b[0]


def test_year_slots():
    rng = np.random.default_rng(0)
    t = TileBlock(12, 2000, 1200)
    multi = TrainRegion(t, tuple((y, Path(f"{y}.jpg")) for y in (1985, 1990, 1995, 2000, 2005)), "x")
    for _ in range(20):
        idx = pick_years(multi, 4, rng)
        assert len(set(idx)) == 4  # distinct years when there are enough
    two = TrainRegion(t, ((2019, Path("a")), (2020, Path("b"))), "x")
    assert set(pick_years(two, 4, rng)) == {0, 1}
    single = TrainRegion(t, ((2018, Path("c")),), "iss_mini")
    assert single.aug_only and not multi.aug_only
    assert pick_years(single, 4, rng) == [0, 0, 0, 0]

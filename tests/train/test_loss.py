"""Neutral-aware MS loss: the neutral mask is strict lat/lon-box overlap across zooms; mined negatives on
neutral pairs are dropped, positives kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
import torch
from pytorch_metric_learning import miners

from earthloc.geo.tiles import TileBlock
from earthloc.train.loss import NeutralAwareMSLoss, neutral_mask


@pytest.fixture(scope="module")
def dense_tiles(shared_data) -> pd.DataFrame:
    """Real 2021 DB tiles (z9/10/11) around the Caspian, where this official subset is dense."""
    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    sel = df[df.center_lat.between(40, 50) & df.center_lon.between(50, 60)]
    assert len(sel) > 150
    return sel.reset_index(drop=True)


def test_neutral_mask_equals_strict_box_overlap(dense_tiles):
    blocks = [TileBlock(int(z), int(r), int(c)) for z, r, c in
              zip(dense_tiles.zoom, dense_tiles.tile_row, dense_tiles.tile_col)]
    mask = neutral_mask(blocks)
    # Independent: shapely boxes from the CSV's own corner columns (5-decimal lat/lon), interiors intersect.
    t = dense_tiles
    boxes = np.asarray(shapely.box(t.ll_lon.to_numpy(), t.ll_lat.to_numpy(), t.ur_lon.to_numpy(), t.ur_lat.to_numpy()))
    a, b = boxes[:, None], boxes[None, :]
    expected = shapely.intersects(a, b) & ~shapely.touches(a, b)
    np.testing.assert_array_equal(mask, expected)
    # The data exercises every case: cross-zoom overlaps, same-zoom 50% neighbours, edge-touching pairs.
    z = dense_tiles.zoom.to_numpy()
    off = ~np.eye(len(z), dtype=bool)
    assert (mask & off & (z[:, None] != z[None, :])).sum() > 50
    assert (mask & off & (z[:, None] == z[None, :])).sum() > 50
    assert (shapely.touches(a, b) & off).sum() > 10


def test_neutral_mask_nested_and_touching():
    z9 = TileBlock(9, 180, 266)
    inside_z11 = TileBlock(11, 722, 1066)  # rows 180.5..181.5, cols 266.5..267.5 at z9: inside z9
    touching_z11 = TileBlock(11, 736, 1064)  # starts exactly at z9's southern edge (row 184 at z9)
    neighbour = TileBlock(9, 180, 268)  # 50% overlap
    m = neutral_mask([z9, inside_z11, touching_z11, neighbour])
    assert m[0, 1] and m[1, 0] and m[0, 3]
    assert not m[0, 2] and not m[1, 2]


def _descriptors(n_regions: int, n_years: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_regions, 32, generator=g)
    x = centres.repeat(n_years, 1) + 0.9 * torch.randn(n_regions * n_years, 32, generator=g)
    return torch.nn.functional.normalize(x, dim=1), torch.arange(n_regions).repeat(n_years)


def test_neutral_negatives_are_dropped_and_positives_kept(dense_tiles):
    blocks = [TileBlock(int(z), int(r), int(c)) for z, r, c in
              zip(dense_tiles.zoom, dense_tiles.tile_row, dense_tiles.tile_col)][:24]
    region_neutral = torch.from_numpy(neutral_mask(blocks))
    desc, labels = _descriptors(len(blocks), 3, seed=0)
    neutral = region_neutral[labels][:, labels]
    a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.1)(desc, labels)
    expected_dropped = int(neutral[a2, n].sum())
    assert expected_dropped > 0
    _, stats = NeutralAwareMSLoss(neutral_aware=True)(desc, labels, neutral)
    assert stats.neutral_dropped == expected_dropped
    assert stats.neg_pairs == len(a2) - expected_dropped
    assert stats.pos_pairs == len(a1)
    _, off = NeutralAwareMSLoss(neutral_aware=False)(desc, labels, neutral)
    assert off.neutral_dropped == 0 and off.neg_pairs == len(a2)


def test_official_hyper_parameters():
    m = NeutralAwareMSLoss()
    assert (m.loss.alpha, m.loss.beta, m.loss.base) == (1.0, 50.0, 0.0)
    assert m.miner.epsilon == 0.1
    assert type(m.loss.distance).__name__ == "DotProductSimilarity"
    assert type(m.miner.distance).__name__ == "CosineSimilarity"

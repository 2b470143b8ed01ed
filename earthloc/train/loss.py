"""Neutral-aware Multi-Similarity loss (EarthLoc recipe, facts section 4).

``pytorch-metric-learning``'s MultiSimilarityMiner (epsilon 0.1, cosine similarity) mines pairs, then
MultiSimilarityLoss (alpha 1, beta 50, base 0, dot-product similarity on L2-normalised descriptors)
scores them. Neutral-aware: before the loss, drop the mined negative pairs (a, n) whose tiles' lat/lon
boxes overlap strictly, at any zoom (50%-overlap neighbours, a z9 block containing a z11 block, the
same place in two sources). Such pairs show the same ground, so pushing them apart would be wrong.
Positive pairs are left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_metric_learning import distances, losses, miners
from torch import nn

from earthloc.geo.tiles import TileBlock

ALPHA, BETA, BASE, EPSILON = 1.0, 50.0, 0.0, 0.1


def neutral_mask(blocks: Sequence[TileBlock]) -> np.ndarray:
    """``[N, N]`` bool: True where two blocks' lat/lon boxes overlap strictly (shared area > 0).

    Exact across zooms: each block becomes an integer tile range at the finest zoom present (tile edges
    at zoom z are edges at every finer zoom, and lon/lat are monotonic in tile x/y), so touching edges
    never count and no floating-point rounding is involved. The diagonal is True.
    """
    if not blocks:
        return np.zeros((0, 0), bool)
    zmax = max(b.zoom for b in blocks)
    k = np.array([2 ** (zmax - b.zoom) for b in blocks], dtype=np.int64)
    r0 = np.array([b.row for b in blocks], dtype=np.int64) * k
    c0 = np.array([b.col for b in blocks], dtype=np.int64) * k
    r1 = r0 + np.array([b.size for b in blocks], dtype=np.int64) * k
    c1 = c0 + np.array([b.size for b in blocks], dtype=np.int64) * k
    rows = (r0[:, None] < r1[None, :]) & (r0[None, :] < r1[:, None])
    cols = (c0[:, None] < c1[None, :]) & (c0[None, :] < c1[:, None])
    return rows & cols


@dataclass(frozen=True)
class LossStats:
    """What one step mined: positive pairs, negative pairs kept, negative pairs dropped as neutral."""

    loss: float
    pos_pairs: int
    neg_pairs: int
    neutral_dropped: int


class NeutralAwareMSLoss(nn.Module):
    """MS miner + MS loss with the official hyper-parameters, optionally neutral-aware.

    ``forward(desc [N, D], labels [N], neutral [N, N] bool | None)`` -> (loss, :class:`LossStats`).
    ``labels`` = region slot of each descriptor; ``neutral[i, j]`` = descriptors i and j show
    strictly overlapping tiles (build it with :func:`neutral_mask` on the regions and index it by labels).
    """

    def __init__(self, neutral_aware: bool = True, alpha: float = ALPHA, beta: float = BETA,
                 base: float = BASE, epsilon: float = EPSILON):
        super().__init__()
        self.neutral_aware = neutral_aware
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon, distance=distances.CosineSimilarity())
        self.loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base,
                                               distance=distances.DotProductSimilarity())

    def forward(self, desc: torch.Tensor, labels: torch.Tensor,
                neutral: torch.Tensor | None = None) -> tuple[torch.Tensor, LossStats]:
        """Loss of L2-normalised ``desc`` [N, D] with region ``labels`` [N]; ``neutral`` [N, N] bool pairs that are
        neither positive nor negative. Returns (loss, stats)."""
        a1, p, a2, n = self.miner(desc, labels)
        dropped = 0
        if self.neutral_aware and neutral is not None and len(a2):
            keep = ~neutral.to(a2.device)[a2, n]
            dropped = int((~keep).sum())
            a2, n = a2[keep], n[keep]
        loss = self.loss(desc, labels, (a1, p, a2, n))
        return loss, LossStats(float(loss.detach()), len(a1), len(a2), dropped)

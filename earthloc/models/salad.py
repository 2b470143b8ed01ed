"""SALAD aggregation (Izquierdo & Civera, CVPR 2024): optimal transport of ViT patch features to clusters.

Shapes for EarthLoc2's base configuration (m = 32 clusters, l = 64 cluster dims, g = 1024 token dims, on a
DINOv2-B/14 at 518 px: C = 768 channels, N = 37 x 37 = 1,369 patches):

- patch map [B, C, H, W] -> ``cluster_features`` f [B, l, N] and ``score`` S [B, m, N] (1x1 convolutions);
- class token [B, C] -> ``token_features`` t [B, g];
- S plus one learned dustbin row -> Sinkhorn (log domain, 3 iterations) -> assignment P [B, m, N];
- V[b, j, i] = sum_n f[b, j, n] P[b, i, n], L2-normalised over j per cluster i, flattened j-major;
- output L2(concat(L2(t), V)) [B, g + l * m] = [B, 3072].

Module and parameter names follow the released EarthLoc2 checkpoint (``dust_bin``, ``token_features.{0,2}``,
``cluster_features.{0,3}``, ``score.{0,3}``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def log_optimal_transport(scores: torch.Tensor, dust_bin: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Entropic optimal transport (regularisation 1) of N features to m clusters plus a dustbin.

    ``scores`` [B, m, N] (feature-to-cluster affinities), ``dust_bin`` scalar (the dustbin row's score).
    Marginals: every cluster row receives mass 1/(N + m), the dustbin (N - m)/(N + m) (it absorbs what no
    cluster wants), every feature column gives 1/(N + m); ``iters`` Sinkhorn iterations in the log domain.
    Returns log P [B, m + 1, N], scaled so that a column of P sums to 1 (the dustbin row last).
    """
    b, m, n = scores.shape
    s = torch.cat([scores, dust_bin.to(scores.dtype).expand(b, 1, n)], dim=1)  # [B, m+1, N]
    norm = -math.log(n + m)
    log_a = torch.full((m + 1,), norm, dtype=s.dtype, device=s.device)
    log_a[-1] += math.log(n - m)
    log_b = torch.full((n,), norm, dtype=s.dtype, device=s.device)
    u = torch.zeros(b, m + 1, dtype=s.dtype, device=s.device)
    v = torch.zeros(b, n, dtype=s.dtype, device=s.device)
    for _ in range(iters):
        u = log_a - torch.logsumexp(s + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(s + u.unsqueeze(2), dim=1)
    return s + u.unsqueeze(2) + v.unsqueeze(1) - norm


class SALAD(nn.Module):
    """(patch map [B, C, H, W], class token [B, C]) -> [B, token_dim + cluster_dim * num_clusters], L2-normalised.

    ``dropout`` acts in training only (eval mode: identity), as in the released model.
    """

    def __init__(self, num_channels: int = 768, num_clusters: int = 32, cluster_dim: int = 64,
                 token_dim: int = 1024, hidden: int = 512, dropout: float = 0.3, sinkhorn_iters: int = 3):
        super().__init__()
        self.num_clusters, self.cluster_dim, self.token_dim = num_clusters, cluster_dim, token_dim
        self.sinkhorn_iters = sinkhorn_iters
        # Registration order = the checkpoint's key order: own parameter first, then the three heads.
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.token_features = nn.Sequential(
            nn.Linear(num_channels, hidden), nn.ReLU(), nn.Linear(hidden, token_dim))
        self.cluster_features = nn.Sequential(
            nn.Conv2d(num_channels, hidden, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv2d(hidden, cluster_dim, 1))
        self.score = nn.Sequential(
            nn.Conv2d(num_channels, hidden, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv2d(hidden, num_clusters, 1))

    @property
    def out_dim(self) -> int:
        """Descriptor length: token_dim + cluster_dim * num_clusters."""
        return self.token_dim + self.cluster_dim * self.num_clusters

    def forward(self, patches: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Patch features [B,C,h,w] and class token [B,C] -> [B, out_dim] L2-normalised descriptors."""
        f = self.cluster_features(patches).flatten(2)  # [B, l, N]
        s = self.score(patches).flatten(2)  # [B, m, N]
        t = self.token_features(token)  # [B, g]
        # The transport runs in fp32 even under autocast: exp/logsumexp over 1,369 columns need the range.
        p = log_optimal_transport(s.float(), self.dust_bin.float(), self.sinkhorn_iters).exp()[:, :-1]  # [B, m, N]
        v = torch.einsum("bjn,bin->bji", f.float(), p)  # [B, l, m]
        v = F.normalize(v, p=2, dim=1).flatten(1)  # index j * m + i
        return F.normalize(torch.cat([F.normalize(t.float(), p=2, dim=-1), v], dim=-1), p=2, dim=-1)

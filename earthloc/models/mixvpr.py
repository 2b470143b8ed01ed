"""MixVPR aggregation (Ali-bey et al., WACV 2023) as configured by EarthLoc.

Shapes for the EarthLoc configuration: feature map [B, 1024, 20, 20] -> [B, 1024, 400] -> 4 feature-mixer
layers along the 400-long spatial axis -> channel_proj on channels -> row_proj on the spatial axis
[B, 1024, 4] -> flatten channel-major (index c*4 + r) -> [B, 4096], L2-normalised.
Module and parameter names match the official checkpoint (``mix.{i}.mix.{0,1,3}``, ``channel_proj``,
``row_proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMixerLayer(nn.Module):
    """x + MLP(LayerNorm(x)) over the last axis (length ``in_dim``), hidden size ``in_dim * mlp_ratio``."""

    def __init__(self, in_dim: int, mlp_ratio: int = 1):
        super().__init__()
        self.mix = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, int(in_dim * mlp_ratio)),
            nn.ReLU(),
            nn.Linear(int(in_dim * mlp_ratio), in_dim),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,HW] -> [B,C,HW]: x plus its MLP mix over the flattened spatial axis."""
        return x + self.mix(x)


class MixVPR(nn.Module):
    """[B, in_channels, in_h, in_w] -> [B, out_channels * out_rows], L2-normalised."""

    def __init__(self, in_channels: int = 1024, in_h: int = 20, in_w: int = 20, out_channels: int = 1024,
                 mix_depth: int = 4, mlp_ratio: int = 1, out_rows: int = 4):
        super().__init__()
        hw = in_h * in_w
        self.in_h, self.in_w = in_h, in_w
        self.out_dim = out_channels * out_rows
        self.mix = nn.Sequential(*[FeatureMixerLayer(hw, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(hw, out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] feature maps -> [B, out_channels * out_rows] L2-normalised descriptors."""
        x = x.flatten(2)                     # [B, C, HW]
        x = self.mix(x)
        x = self.channel_proj(x.transpose(1, 2))  # [B, HW, C']
        x = self.row_proj(x.transpose(1, 2))      # [B, C', rows]
        return F.normalize(x.flatten(1), p=2, dim=-1)

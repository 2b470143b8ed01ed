"""MixVPR as EarthLoc configures it: shapes, unit-norm descriptors, residual mixer layers, and the
sensitivity to where a feature is (the row projection keeps spatial layout, unlike pooling)."""

from __future__ import annotations

import torch

from earthloc.models.mixvpr import FeatureMixerLayer, MixVPR


def test_shapes_and_norm_of_the_official_configuration():
    torch.manual_seed(0)
    agg = MixVPR(in_channels=1024, in_h=20, in_w=20, out_channels=1024, mix_depth=4, mlp_ratio=1, out_rows=4).eval()
    x = torch.randn(3, 1024, 20, 20)
    with torch.no_grad():
        y = agg(x)
    assert y.shape == (3, 4096) and agg.out_dim == 4096
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))


def test_mixer_layer_is_residual_and_layout_matters():
    torch.manual_seed(0)
    layer = FeatureMixerLayer(16).eval()
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x) - x, layer.mix(x))  # x + MLP(x)
        agg = MixVPR(in_channels=8, in_h=4, in_w=4, out_channels=8, mix_depth=2, out_rows=2).eval()
        f = torch.randn(1, 8, 4, 4)
        moved = torch.roll(f, shifts=1, dims=3)  # same features, other places
        assert not torch.allclose(agg(f), agg(moved))

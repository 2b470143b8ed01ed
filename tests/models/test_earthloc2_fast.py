"""EarthLoc2's inference paths against eager fp32 on real Sentinel-2 contexts: the tolerance (cosine >= 0.999)
of the path ``auto`` takes and of bf16 autocast, and batching. Random weights; the network is built for 112-px
input (8 x 8 patches) to keep ViT-B affordable on two shared cores (the OpenVINO conversion alone takes ~1 min)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthloc.models import fast
from earthloc.models.earthloc2 import EarthLoc2Net
from earthloc.models.encode import encode


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(2)
    return EarthLoc2Net(image_size=112).eval()


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(-1).min())


def test_batching_does_not_change_descriptors(small, contexts):
    one = encode(small, contexts[:3], batch_size=1, progress=False, path="eager")
    three = encode(small, contexts[:3], batch_size=3, progress=False, path="eager")
    assert one.shape == (3, 1, 3072)
    np.testing.assert_allclose(one, three, atol=2e-5)


@pytest.mark.slow
def test_auto_path_and_bf16_within_tolerance(small, contexts):
    assert fast.candidates(small)[0] == "ov"  # openvino is a dependency; bf16 where native, else fp32
    ref = encode(small, contexts[:4], rotations=(0, 90), progress=False, path="eager")
    paths = ["ov"] + (["bf16"] if fast.bf16_supported() else [])
    for path in paths:
        assert fast.make_runner(small, path)[0] == path
        got = encode(small, contexts[:4], rotations=(0, 90), progress=False, path=path)
        assert _min_cos(got, ref) >= 0.999, path

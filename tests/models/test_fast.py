"""Inference-path choice and fallbacks of earthloc.models.fast on CPUs without native bf16 or without runtimes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthloc.models import fast
from earthloc.models.encode import encode


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(fast, "bf16_supported", lambda: False)


def test_without_native_bf16_openvino_runs_fp32_and_matches_eager(no_bf16, earthloc_random, contexts):
    assert fast.candidates(earthloc_random)[0] == "ov"  # bf16 autocast is not a candidate any more
    assert "bf16" not in fast.candidates(earthloc_random)
    assert fast.ov_precision() == "f32"
    got = encode(earthloc_random, contexts[:2], progress=False, path="ov")
    ref = encode(earthloc_random, contexts[:2], progress=False, path="eager")
    assert float((got * ref).sum(-1).min()) > 0.99999  # fp32 in OpenVINO: same numbers up to rounding


def test_without_runtimes_falls_back_to_pytorch(no_bf16, monkeypatch, earthloc_random, lite0_gem):
    monkeypatch.setattr(fast, "ov_available", lambda: False)
    monkeypatch.setattr(fast, "ort_available", lambda: False)
    assert fast.candidates(earthloc_random) == ("cl",)
    assert fast.candidates(lite0_gem) == ("cl",)
    assert fast.resolve_path(earthloc_random, "ov") == "cl"
    assert fast.resolve_path(earthloc_random, "bf16") == "cl"


def test_small_jobs_skip_a_graph_not_converted_yet(earthloc_random):
    fast.forget_converted()
    path, _ = fast.make_runner(earthloc_random, "auto", workload=3)
    assert path != "ov" and path in fast.candidates(earthloc_random)
    path, run = fast.make_runner(earthloc_random, "auto", workload=100)
    assert path == "ov" and fast.ov_converted(earthloc_random)
    assert fast.make_runner(earthloc_random, "auto", workload=3)[0] == "ov"  # converted now: worth it
    assert np.isfinite(run(torch.zeros(1, 3, 320, 320)).numpy()).all()

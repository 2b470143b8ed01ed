"""Fixtures for model tests: models are built once per session (building EarthLoc takes ~1 s)."""

from __future__ import annotations

import pytest
import torch

from earthloc.models.registry import load_model


@pytest.fixture(scope="session")
def earthloc_random():
    """Official architecture, random init with a fixed seed (no weights exist offline)."""
    torch.manual_seed(0)
    return load_model("earthloc", pretrained=False)


@pytest.fixture(scope="session")
def lite0_gem():
    return load_model("lite0-gem")


@pytest.fixture(scope="session")
def contexts(shared_data):
    """Real Sentinel-2 cloudless context images (1536 px), sorted by name."""
    return sorted((shared_data / "iss_mini" / "contexts").glob("*.jpg"))

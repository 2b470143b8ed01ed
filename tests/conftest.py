"""Shared fixtures. Real data comes from ``EARTHLOC_SHARED`` (default ../shared); missing data fails, never skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthloc.config import data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<EARTHLOC_SHARED>/data``; the suite fails loudly if it is not there."""
    d = data_dir()
    assert (d / "README.md").is_file(), f"shared data not found at {d}: set EARTHLOC_SHARED"
    return d


@pytest.fixture(scope="session")
def meta(shared_data: Path) -> Path:
    """``<shared>/data/earthloc_meta``: the official dataset's query and DB-tile metadata."""
    return shared_data / "earthloc_meta"

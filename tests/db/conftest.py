"""Fixtures for DB tests: the iss_mini Sentinel-2-cloudless contexts as a tile source."""

from __future__ import annotations

import pytest

from earthloc.sources.iss_mini import IssMini
from earthloc.sources.mosaic import MosaicSource


@pytest.fixture(scope="session")
def mini(shared_data) -> MosaicSource:
    return IssMini.open(shared_data).source()

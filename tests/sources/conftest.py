"""Fixtures for source tests: the iss_mini mosaics and one real context chosen for its 12x12 tile block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from earthloc.sources.iss_mini import IssMini
from earthloc.sources.mosaic import MosaicSource

CONTEXT = "12_1164_2526"  # a 1536-px (128 px per tile) z12 context that no other context overlaps


@pytest.fixture(scope="session")
def mini(shared_data) -> MosaicSource:
    return IssMini.open(shared_data).source()


@pytest.fixture(scope="session")
def context(shared_data):
    """(row of contexts.csv, decoded RGB pixels (1536, 1536, 3) uint8) of :data:`CONTEXT`."""
    row = pd.read_csv(shared_data / "iss_mini" / "contexts.csv").set_index("candidate_tile").loc[CONTEXT]
    img = np.asarray(Image.open(shared_data / "iss_mini" / row.file).convert("RGB"))
    assert img.shape == (1536, 1536, 3)
    return row, img

"""Fixtures for refinement tests: real iss_mini contexts and an independent pixel -> lon/lat oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest
from PIL import Image

from earthloc.geo.tiles import TileBlock
from earthloc.refine.context import Context

_TO_3857 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


@pytest.fixture(scope="session")
def iss_mini(shared_data):
    return shared_data / "iss_mini"


@pytest.fixture(scope="session")
def contexts_table(iss_mini) -> pd.DataFrame:
    return pd.read_csv(iss_mini / "contexts.csv", dtype={"candidate_tile": str}).set_index("candidate_tile")


def load_context(iss_mini, table, name: str) -> tuple[Context, pd.Series]:
    row = table.loc[name]
    img = np.array(Image.open(iss_mini / row.file).convert("RGB"))
    return Context(img, TileBlock(int(row.zoom), int(row.tile_row0), int(row.tile_col0), 12)), row


def oracle_lonlat(row: pd.Series, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Pixel -> lon/lat from the CSV's published bounds through pyproj's EPSG:3857 (independent of earthloc):
    pixels are linear in Web-Mercator metres between the west/north and east/south edges."""
    (x0, x1), (y0, y1) = _TO_3857.transform([row.west_lon, row.east_lon], [row.north_lat, row.south_lat])
    mx = x0 + np.asarray(x, float) / row.width_px * (x1 - x0)
    my = y0 + np.asarray(y, float) / row.height_px * (y1 - y0)
    return _TO_3857.transform(mx, my, direction="INVERSE")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Learned matchers run with one thread here: on a loaded 2-core machine two threads are several
    times slower (oversubscription). Restored afterwards for other tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

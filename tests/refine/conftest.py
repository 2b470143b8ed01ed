"""Fixtures for refinement tests: real iss_mini contexts and an independent pixel -> lon/lat oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest
from PIL import Image

from earthloc.geo.tiles import TileBlock
from earthloc.refine.context import Context
from earthloc.sources.iss_mini import IssMini

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


# A hand-written refinement run (see tests/refine/test_evaluate.py): the real photo ISS056-E-153176, whose true
# place is rank 6 of its worldwide list; rank 6 refined to NASA's own footprint (60 inliers), rank 0 to its own
# wrong block (35 inliers), rank 5 without context imagery.
HAND_RUN_MRF = "ISS056-E-153176"


@pytest.fixture(scope="session")
def hand_run(shared_data) -> tuple:
    """(the photo's Localization, its run record)."""
    loc = next(l for l in IssMini.open(shared_data).localizations() if l.photo.mrf == HAND_RUN_MRF)
    return loc, _record(loc)


def _record(loc) -> dict:
    wrong = loc.candidates[0]
    return {"mrf": HAND_RUN_MRF, "matcher": "sift", "iterations": 4, "seconds": 2.5, "error": None, "candidates": [
        {"rank": 0, "tile": wrong.tile.name, "rotation": 0, "inliers": 35, "iterations": 4, "reason": "ok",
         "footprint": [list(p) for p in wrong.footprint.corners]},
        {"rank": 6, "tile": loc.candidates[6].tile.name, "rotation": 0, "inliers": 60, "iterations": 4,
         "reason": "ok", "footprint": [list(p) for p in loc.photo.footprint.corners]},
        {"rank": 5, "tile": loc.candidates[5].tile.name, "rotation": 0, "inliers": 0, "iterations": 1,
         "reason": "no context imagery", "footprint": None}]}

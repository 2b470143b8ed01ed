"""Fixtures for the evaluation tests, built with our own tools from real data in ``../shared/data``.

``official_dataset``: a small dataset in the official layout, in a tmp dir:
* ``database/``: DB images cut by our DB builder (``build_db`` over ``IssMini.open().source()``: real
  Sentinel-2 cloudless 2018 contexts) at zooms 9/10, around the footprints of real ISS photos;
* ``queries/``: the real ISS photos of iss_mini whose date is known, written under official EarthLoc
  photo names (``PhotoName``: their footprint corners, MRF, date, nadir, area, orientation).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mercantile
import pandas as pd
import pytest

from earthloc.geo.tiles import TileBlock

# Dated iss_mini photos whose nadir lies < 2500 km from an official test area (checked in test_official).
OFFICIAL_PHOTOS = ("ISS052-E-43456", "ISS052-E-85735", "ISS052-E-44668", "ISS064-E-358", "ISS062-E-75554",
                   "ISS062-E-24032", "ISS055-E-7189")
PLACES_PER_PHOTO = 4  # the first covered z9/z10 places around each footprint (positives and near misses)
DB_YEAR = 2018  # the iss_mini contexts are s2cloudless 2018


def _covered_places(source, corners: list[tuple[float, float]], limit: int) -> list[TileBlock]:
    """Even-aligned z9/z10 4x4 blocks near the footprint whose 16 tiles the mosaics cover."""
    lats, lons = [c[0] for c in corners], [c[1] for c in corners]
    found = []
    for z in (9, 10):
        tl, br = mercantile.tile(min(lons), max(lats), z), mercantile.tile(max(lons), min(lats), z)
        for row in range(tl.y - 3 - (tl.y - 3) % 2, br.y + 1, 2):
            for col in range(tl.x - 3 - (tl.x - 3) % 2, br.x + 1, 2):
                b = TileBlock(z, row, col)
                if all(source.covers(t.z, t.x, t.y, DB_YEAR) for t in b.tiles()):
                    found.append(b)
                if len(found) == limit:
                    return found
    return found


@pytest.fixture(scope="session")
def iss_queries(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "iss_mini" / "queries.csv")


@pytest.fixture(scope="session")
def official_dataset(tmp_path_factory, shared_data: Path, iss_queries: pd.DataFrame) -> Path:
    from datetime import datetime

    from earthloc.db.build import build_db
    from earthloc.geo.names import PhotoName
    from earthloc.sources.iss_mini import IssMini

    root = tmp_path_factory.mktemp("official")
    source = IssMini.open(shared_data / "iss_mini").source()
    rows = iss_queries.set_index("mrf").loc[list(OFFICIAL_PHOTOS)]
    places: list[TileBlock] = []
    (root / "queries").mkdir()
    for mrf, r in rows.iterrows():
        corners = [(r.ll_lat, r.ll_lon), (r.ul_lat, r.ul_lon), (r.ur_lat, r.ur_lon), (r.lr_lat, r.lr_lon)]
        places += [b for b in _covered_places(source, corners, PLACES_PER_PHOTO) if b not in places]
        name = PhotoName(corners=tuple(corners), mrf=mrf, date=datetime.strptime(str(int(r.date)), "%Y%m%d").date(),
                         nadir=(r.nadir_lat, r.nadir_lon), area_km2=int(r.area_km2), orientation=float(r.orientation_deg))
        shutil.copyfile(shared_data / "iss_mini" / "queries" / f"{mrf}.jpg", root / "queries" / name.filename)
    build_db(source, places, [DB_YEAR], root, workers=2, progress=False)
    return root

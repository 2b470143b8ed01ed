"""Small real DBs built with our DB builder, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from earthloc.geo.tiles import TileBlock


@pytest.fixture(scope="session")
def iss_db(shared_data, tmp_path_factory) -> Path:
    """A single-year (2018) DB of 16 iss_mini candidate places, built from the real contexts."""
    from earthloc.db.build import build_db
    from earthloc.sources.iss_mini import IssMini

    df = pd.read_csv(shared_data / "iss_mini" / "contexts.csv")
    places = sorted({TileBlock.from_name(t) for t in df["candidate_tile"]})[:16]
    out = tmp_path_factory.mktemp("iss_db")
    build_db(IssMini.open(shared_data).source(), places, [2018], out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def landsat_db(shared_data, tmp_path_factory) -> Path:
    """A multi-year DB: 6 z14 Landsat places over Pucallpa x 4 epochs, built from the real GeoTIFFs."""
    from earthloc.db.build import build_db
    from earthloc.db.grid import places_covered
    from earthloc.sources.raster import RasterSource

    files = sorted((shared_data / "multiyear" / "landsat_pucallpa").glob("*.tif"))[::2]  # 1985, 1995, 2005, 2015
    src = RasterSource({int(f.stem): f for f in files}, bands=(1, 2, 3))
    places = places_covered(src, [14])[:6]
    out = tmp_path_factory.mktemp("landsat_db")
    build_db(src, places, list(src.years), out, workers=2, progress=False)
    return out

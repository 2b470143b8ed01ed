"""DbTiles (the web app's basemap cut from the DB) on one real DB image (place 12_1164_2526, Sentinel-2
cloudless from iss_mini): native tiles are its pixels, a partly covered tile is a WEBP whose alpha is
exactly the covered part, nothing outside the DB or below the overview levels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.service.map_tiles import OVERVIEW_LEVELS, DbTiles
from earthloc.sources.iss_mini import IssMini


@pytest.fixture(scope="module")
def tiles(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("db")
    src = IssMini.open(shared_data).source()
    build_db(src, [TileBlock(12, 1164, 2526)], [2018], out, workers=1, progress=False)
    return DbTiles(out), src


def _rgba(t) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(t.data)).convert("RGBA"), dtype=np.int16)


def test_native_tile_is_the_db_image_pixels(tiles):
    db, src = tiles
    assert db.native_zooms == (12,) and db.years == (2018,) and db.min_zoom == 12 - OVERVIEW_LEVELS
    t = db.tile(2018, 12, 2527, 1165)  # inside the 4x4 block
    assert t.media_type == "image/jpeg"
    want = np.asarray(src.tile(12, 2527, 1165, 2018), dtype=np.int16)
    assert np.abs(_rgba(t)[..., :3] - want).mean() < 3  # the same pixels up to JPEG re-encoding
    (s, w), (n, e) = db.extent
    west, south, east, north = TileBlock(12, 1164, 2526).bounds
    assert np.allclose([s, w, n, e], [south, west, north, east], atol=1e-4)


def test_a_half_covered_tile_is_transparent_where_the_db_has_nothing(tiles):
    db, _ = tiles
    # z10 tile (631, 291) spans z12 columns 2524-2527; the block covers 2526-2529: the right half
    t = db.tile(2018, 10, 631, 291)
    assert t.media_type == "image/webp"
    alpha = _rgba(t)[..., 3]
    assert (alpha[:, :128] == 0).all() and (alpha[:, 128:] == 255).all()


def test_nothing_outside_or_below_the_overviews(tiles):
    db, _ = tiles
    assert db.tile(2018, 12, 0, 0) is None
    assert db.tile(2019, 12, 2527, 1165) is None
    for z, want in ((db.min_zoom - 1, False), (db.min_zoom, True)):  # the tile holding the block at zoom z
        assert (db.tile(2018, z, 2527 >> (12 - z), 1165 >> (12 - z)) is not None) == want

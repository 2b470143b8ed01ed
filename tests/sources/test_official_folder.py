"""OfficialSource: tiles read back from an official-layout folder by file names, never written to."""

from __future__ import annotations

import numpy as np
import pytest

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.db.grid import places_covered
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.official_folder import OfficialSource


def test_tiles_come_back_from_the_db_images_and_rebuild_identically(mini, context, tmp_path):
    row, ctx = context
    blocks = [TileBlock(12, int(row.tile_row0) + r, int(row.tile_col0) + c) for r in (0, 2) for c in (0, 2, 4)]
    build_db(mini, blocks, [2018], tmp_path / "db", workers=2, progress=False)
    (tmp_path / "db" / manifest.MANIFEST).unlink()  # read by names, as an official download would be
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "db").rglob("*")}
    src = OfficialSource(tmp_path / "db")
    assert src.years == (2018,) and src.native_zooms == (12,)
    assert places_covered(src) == sorted(blocks)
    # a tile that only the second-row, second-col image holds (row0+5, col0+7) comes from that image
    t = np.asarray(src.tile(12, int(row.tile_col0) + 7, int(row.tile_row0) + 5, 2018)).astype(int)
    expected = ctx[5 * 128 : 6 * 128, 7 * 128 : 8 * 128].repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(t - expected).mean() < 3  # one JPEG generation away from the context crop
    with pytest.raises(InputError, match="not in the DB folder"):
        src.tile(12, int(row.tile_col0) + 20, int(row.tile_row0), 2018)
    # re-cutting the folder reproduces the same images up to one more JPEG generation
    build_db(src, blocks[:2], [2018], tmp_path / "copy", progress=False)
    a = manifest.load(tmp_path / "copy")
    assert len(a) == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "db").rglob("*")} == before  # read-only


def test_empty_folder_is_an_input_error(tmp_path):
    (tmp_path / "database").mkdir()
    with pytest.raises(InputError, match="no official DB images"):
        OfficialSource(tmp_path)

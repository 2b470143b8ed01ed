"""Context providers (the candidate's 12x12-tile surrounding): the stored iss_mini contexts, a tile source and a
DB folder give the same real Sentinel-2 imagery; missing imagery is ``None``."""

from __future__ import annotations

import numpy as np
import pytest

from earthloc.db.build import build_db
from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate
from earthloc.refine.context import DbContexts, IssMiniContexts, SourceContexts
from earthloc.sources.iss_mini import IssMini

from .conftest import load_context


def test_context_providers_paste_the_same_imagery(iss_mini, contexts_table, tmp_path):
    """A DB built from the iss_mini mosaics and the tile source itself give, for candidate 12_1164_2526,
    a surrounding that matches the stored EarthMatch context pixel for pixel (mean error < 6 levels)."""
    tile = TileBlock(12, 1164, 2526)
    stored, _ = load_context(iss_mini, contexts_table, "12_1164_2526")
    cand = Candidate(tile, 2018, 0, 0.0, Footprint.from_bounds(*tile.bounds))
    source = IssMini.open(iss_mini).source()
    places = [TileBlock(12, 1164 + dr, 2526 + dc) for dr in (-4, 0, 4) for dc in (-4, 0, 4)]
    build_db(source, places, [2018], tmp_path / "db", workers=2, progress=False)
    for provider in (IssMiniContexts(iss_mini), SourceContexts(source), DbContexts(tmp_path / "db")):
        ctx = provider.context(cand)
        assert ctx.block == cand.tile.surrounding() == stored.block
        assert ctx.image.shape == stored.image.shape
        err = np.abs(ctx.image.astype(int) - stored.image.astype(int)).mean()
        assert err < 6, (type(provider).__name__, err)
    assert DbContexts(tmp_path / "db").context(Candidate(TileBlock(11, 10, 10), 2018, 0, 0.0, Footprint.from_bounds(*TileBlock(11, 10, 10).bounds))) is None  # nothing of it in the DB


def test_iss_mini_contexts_know_their_blocks_and_refuse_a_wrong_folder(iss_mini, tmp_path):
    provider = IssMiniContexts(iss_mini)
    assert provider.block_of("12_1164_2526") == TileBlock(12, 1160, 2522, 12)  # 4 tiles of margin each side
    assert provider.block_of("12_0000_0000") is None
    far = Candidate(TileBlock(5, 0, 0), 2018, 0, 0.0, Footprint.from_bounds(*TileBlock(5, 0, 0).bounds))
    assert provider.context(far) is None  # no stored context for it
    with pytest.raises(InputError, match="not an iss_mini folder"):
        IssMiniContexts(tmp_path)

"""MosaicSource on one real iss_mini context (12_1164_2526: 12x12 z12 tiles in 1536 px, 128 px per tile,
overlapped by no other context): native tiles replicate pixels exactly, a coarser zoom averages exact
blocks, coverage and errors follow the block. Expected pixels are cut from the JPEG with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.mosaic import MosaicSource

from .conftest import CONTEXT


@pytest.fixture(scope="module")
def one(shared_data) -> MosaicSource:
    ctx = next(c for c in IssMini.open(shared_data).contexts() if c.candidate_tile == CONTEXT)
    return MosaicSource([ctx.mosaic])


def test_native_tile_replicates_the_context_pixels(one, context):
    _, img = context
    r0, c0 = 1164 - 4, 2526 - 4  # the context's top-left tile (4 tiles of margin around the candidate)
    got = np.asarray(one.tile(12, c0 + 5, r0 + 3, 2018))
    crop = img[3 * 128:4 * 128, 5 * 128:6 * 128]
    assert np.array_equal(got, crop.repeat(2, axis=0).repeat(2, axis=1))  # nearest 2x: every pixel a source pixel


def test_one_zoom_coarser_is_the_256_px_crop_itself(one, context):
    _, img = context
    # z11 tile (1261, 580) holds z12 tiles rows 1160-1161, cols 2522-2523: the context's top-left 256 x 256 px
    got = np.asarray(one.tile(11, 1261, 580, 2018))
    assert np.array_equal(got, img[:256, :256])


def test_coverage_and_covers_follow_the_block(one):
    assert one.coverage(12) == [(1160, 1172, 2522, 2534)]
    assert one.coverage(11) == [(580, 586, 1261, 1267)]
    assert one.coverage(11, native_only=True) == []
    assert one.covers(12, 2522, 1160, 2018) and not one.covers(12, 2534, 1160, 2018)
    assert not one.covers(12, 2522, 1160, 2019)
    assert one.covers_block(TileBlock(12, 1164, 2526), 2018) and not one.covers_block(TileBlock(12, 1170, 2526), 2018)
    assert one.years == (2018,) and one.native_zooms == (12,)


def test_an_uncovered_tile_names_itself(one):
    with pytest.raises(InputError, match="tile 12/0/0 year 2018"):
        one.tile(12, 0, 0, 2018)
    with pytest.raises(InputError, match="no mosaics"):
        MosaicSource([])

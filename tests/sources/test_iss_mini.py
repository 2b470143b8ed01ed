"""The iss_mini dataset module on the real shared data: expected values read with the stdlib csv module
and from the data README (190 contexts, 32 photos here, 10 candidates per photo), not from the code under test."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini, read_candidates


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def iss(shared_data) -> IssMini:
    return IssMini.open(shared_data)


def test_open_takes_the_data_folder_or_the_iss_mini_folder(shared_data, tmp_path):
    assert IssMini.open(shared_data).root == IssMini.open(shared_data / "iss_mini").root == shared_data / "iss_mini"
    with pytest.raises(InputError, match="not an iss_mini folder"):
        IssMini.open(tmp_path)


def test_contexts_are_the_190_georeferenced_12x12_blocks(iss):
    got = iss.contexts()
    raw = _rows(iss.contexts_csv)
    assert len(got) == len(raw) == 190
    for c, r in zip(got, raw):
        assert c.path == iss.root / r["file"] and c.path.is_file()
        assert c.block == TileBlock(int(r["zoom"]), int(r["tile_row0"]), int(r["tile_col0"]), 12)
        # each context is the surrounding of its candidate (the 4x4 block at its centre)
        assert TileBlock.from_name(c.candidate_tile).surrounding() == c.block
        assert c.year == 2018


def test_candidates_keep_rank_rotation_and_unknown_bounds(iss):
    got = iss.candidates()
    raw = _rows(iss.candidates_csv)
    assert len(got) == len(raw)
    for c, r in zip(got, raw):
        assert (c.mrf, c.rank) == (r["mrf"], int(r["rank"]))
        assert c.bounds_known == (r["bounds_known"] == "1")
        assert (c.tile.name if c.tile else "") == r["candidate_tile"]
        assert c.image_file == (r["image_file"] or None)
        assert c.rotation_deg == (int(r["retrieval_rotation_deg"]) if r["retrieval_rotation_deg"] else None)
        assert c.context_file == (r["context_file"] or None)
    assert sum(not c.bounds_known for c in got) == sum(r["bounds_known"] == "0" for r in raw) > 0


def test_localizations_are_the_photos_with_images_and_ranked_known_candidates(iss):
    locs = iss.localizations()
    with_image = {r["mrf"] for r in _rows(iss.queries_csv) if (iss.root / "queries" / f"{r['mrf']}.jpg").is_file()}
    assert len(with_image) == 32
    assert [l.photo.mrf for l in locs] == sorted(l.photo.mrf for l in locs)
    assert {l.photo.mrf for l in locs} <= with_image
    known = [r for r in _rows(iss.candidates_csv) if r["bounds_known"] == "1" and r["mrf"] in with_image]
    assert sum(len(l.candidates) for l in locs) == len(known)
    for loc in locs:
        assert [c.score for c in loc.candidates] == sorted((c.score for c in loc.candidates), reverse=True)
        assert all(c.tile.size == 4 and c.year == 2018 for c in loc.candidates)


def test_source_serves_the_context_pixels_of_a_candidate_tile(iss):
    """The top-left tile of a context's centre candidate is that context's pixel box (12 tiles per side)."""
    src = iss.source()
    ctx = next(c for c in iss.contexts() if c.candidate_tile == "12_1164_2526")  # overlapped by no other context
    cand = TileBlock.from_name(ctx.candidate_tile)
    tile = np.asarray(src.tile(cand.zoom, cand.col, cand.row, 2018), dtype=float)
    px = ctx.width_px // 12
    crop = np.asarray(Image.open(ctx.path).convert("RGB"), dtype=float)[4 * px:5 * px, 4 * px:5 * px]
    assert tile.shape == (256, 256, 3)
    assert np.abs(tile.mean(axis=(0, 1)) - crop.mean(axis=(0, 1))).max() < 1.0


def test_a_candidates_table_missing_columns_names_the_file(tmp_path):
    bad = tmp_path / "c.csv"
    bad.write_text("mrf,rank\nX,0\n")
    with pytest.raises(InputError, match="missing columns") as err:
        read_candidates(bad)
    assert str(bad) in str(err.value)

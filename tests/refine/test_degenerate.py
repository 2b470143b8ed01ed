"""Degenerate inputs are rejected cleanly: a blank image, a photo of open sea, a tiny photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate, Localization, Photo
from earthloc.refine.homography import refine_candidate
from earthloc.refine.matchers import load_matcher
from earthloc.refine.rerank import refine_localization

from .conftest import load_context

COAST = "14_9844_9364"  # candidate of context 14_9840_9360: a cape and open sea (south-east Australia, z14)


def _cand(name: str, rotation: int = 0) -> Candidate:
    t = TileBlock.from_name(name)
    return Candidate(t, 2018, rotation, 0.0, Footprint.from_bounds(*t.bounds))


def _sea_crop(iss_mini, table) -> np.ndarray:
    ctx, _ = load_context(iss_mini, table, "14_9840_9360")
    crop = ctx.image[1000:1512, 1000:1512]  # bottom-right of the context: open sea only
    assert crop.reshape(-1, 3).std(axis=0).max() < 6, "the crop must be sea (nearly uniform per channel)"
    return np.ascontiguousarray(crop)


@pytest.mark.parametrize("matcher_name", ["sift", "orb", "xfeat-lg"])
def test_blank_and_sea_photos_rejected(iss_mini, contexts_table, matcher_name):
    """A uniform grey image and a crop of open sea get no accepted footprint against a coastal context
    (the sea crop's own context, whose sea it shares) for every matcher."""
    ctx, _ = load_context(iss_mini, contexts_table, "14_9840_9360")
    m = load_matcher(matcher_name)
    cand = _cand(COAST)
    blank = np.full((512, 512, 3), 128, np.uint8)
    for photo in (blank, _sea_crop(iss_mini, contexts_table)):
        for rot in (0, 180):
            ref = refine_candidate(photo, Candidate(cand.tile, 2018, rot, 0.0, cand.footprint), ctx, m, iterations=2)
            assert not ref.accepted and ref.footprint is None
            assert ref.reason.startswith(("too few", "outline"))


def test_tiny_photo_rejected(iss_mini, contexts_table):
    """A 40x30 photo is refused before matching, with the reason."""
    ctx, _ = load_context(iss_mini, contexts_table, "14_9840_9360")
    ref = refine_candidate(np.zeros((30, 40, 3), np.uint8), _cand(COAST), ctx, load_matcher("sift"))
    assert not ref.accepted and ref.reason == "photo too small (40x30 px)"


def test_tiny_or_broken_photo_file_ends_as_error(tmp_path, iss_mini):
    """Through the localisation API a tiny or unreadable file becomes the localisation's error (batch goes on)."""
    from earthloc.refine.context import IssMiniContexts

    tiny = tmp_path / "tiny.jpg"
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tiny)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    for path, words in ((tiny, "too small"), (broken, "cannot read image")):
        loc = Localization(Photo("X", path=path), (_cand(COAST),))
        res = refine_localization(loc, IssMiniContexts(iss_mini), load_matcher("sift"))
        assert res.localization.error is not None and words in res.localization.error
        assert str(path) in res.localization.error
        assert res.localization.refined_footprint is None


def test_unknown_matcher_is_input_error():
    from earthloc.errors import InputError

    with pytest.raises(InputError, match="unknown; choose one of xfeat-lg"):
        load_matcher("superpoint-lg")

"""compose / check_tile / DecodedImages on real iss_mini imagery: a composed block is its tiles pasted
north-up without resampling; a wrong-size tile and an unreadable image name themselves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.base import DecodedImages, check_tile, compose


def test_compose_pastes_the_tiles_in_place(mini):
    block = TileBlock(12, 1164, 2526)
    img = np.asarray(compose(mini, block, 2018))
    assert img.shape == (1024, 1024, 3)
    for dr, dc in ((0, 0), (1, 3), (3, 2)):
        tile = np.asarray(mini.tile(12, 2526 + dc, 1164 + dr, 2018))
        assert np.array_equal(img[dr * 256:(dr + 1) * 256, dc * 256:(dc + 1) * 256], tile)


def test_check_tile_converts_and_refuses_other_sizes():
    assert check_tile(Image.new("L", (256, 256)), "t").mode == "RGB"
    with pytest.raises(ValueError, match="tile 3/1/2: tile is 255x256 px"):
        check_tile(Image.new("RGB", (255, 256)), "tile 3/1/2")


def test_decoded_images_cache_and_errors(shared_data, tmp_path):
    cache = DecodedImages(1, "context")
    a, b = sorted((shared_data / "iss_mini" / "contexts").glob("*.jpg"))[:2]
    first = cache.get(a)
    assert cache.get(a) is first  # kept
    cache.get(b)
    assert cache.get(a) is not first  # evicted by b (size 1), decoded again
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"no jpeg")
    with pytest.raises(InputError, match="cannot read context"):
        cache.get(bad)

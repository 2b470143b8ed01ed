"""The place grid: stride, latitude limit, land mask, regions (bbox, circle, test areas)."""

from __future__ import annotations

import mercantile
import numpy as np
import pandas as pd
import pytest

from earthloc.db.grid import OFFICIAL_PLACES, Region, block_land_fraction, places, places_covered
from earthloc.geo.footprint import haversine_km
from earthloc.geo.tiles import TileBlock


def test_land_mask_keeps_land_and_drops_open_sea():
    sea = TileBlock(10, 500, 100)  # mid-Pacific, ~ (2 N, -145 E)
    sahara = TileBlock(10, 444, 566)  # ~ (23 N, 19 E)
    w, s, e, n = sea.bounds
    assert -150 < w < e < -140 and 0 < s < n < 5
    w, s, e, n = sahara.bounds
    assert 15 < w < e < 25 and 20 < s < n < 26
    frac = block_land_fraction(10, np.array([sea.row, sahara.row]), np.array([sea.col, sahara.col]))
    assert frac[0] == 0 and frac[1] == 1
    got = places([10], Region.bbox(-150, 0, 25, 26))
    assert sahara in got and sea not in got


def test_bbox_places_are_the_even_blocks_touching_the_box():
    box = (5.0, 44.0, 8.0, 46.0)  # Alps, mostly land
    got = set(places([11], Region.bbox(*box), land_only=False))
    tiles = list(mercantile.tiles(*box, zooms=11))
    expected = {TileBlock(11, r, c) for t in tiles for r in (t.y - t.y % 2, t.y - t.y % 2 - 2)
                for c in (t.x - t.x % 2, t.x - t.x % 2 - 2)}
    expected = {b for b in expected if b.bounds[0] < box[2] and b.bounds[2] > box[0]
                and b.bounds[1] < box[3] and b.bounds[3] > box[1]}
    assert got == expected and all(b.row % 2 == 0 and b.col % 2 == 0 for b in got)


def test_bbox_across_the_antimeridian():
    got = places([9], Region.bbox(175, -20, -175, -15), land_only=False)  # Fiji
    lons = [b.lonlat_box_centre[1] for b in got]
    assert any(v > 170 for v in lons) and any(v < -170 for v in lons)
    assert all(abs(v) > 165 for v in lons)


def test_circle_uses_haversine_on_the_stored_centre():
    reg = Region.area("toshka", radius_km=400)  # (23, 30)
    got = places([10], reg, land_only=False)
    wide = places([10], Region.bbox(20, 14, 40, 32), land_only=False)
    d = {b: float(haversine_km(23, 30, *b.lonlat_box_centre)) for b in wide}
    assert set(got) == {b for b, km in d.items() if km <= 400}
    assert len(got) > 20


def test_latitude_limit_keeps_whole_blocks_inside():
    got = places([9], Region.bbox(20, 50, 40, 70), land_only=False)
    assert max(b.bounds[3] for b in got) <= 60 and max(b.bounds[3] for b in got) > 59
    assert places([9], Region.bbox(20, 50, 40, 70), land_only=False, max_abs_lat=80) != got


@pytest.mark.slow
def test_world_grid_count_and_official_tiles(shared_data):
    world = places()
    n = len(world)
    print(f"world grid: {n} places = {n / OFFICIAL_PLACES:.3f} x official")
    assert 0.95 * OFFICIAL_PLACES < n < 1.15 * OFFICIAL_PLACES
    official = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    ours = set(world)
    kept = sum(TileBlock(int(z), int(r), int(c)) in ours for z, r, c in official[["zoom", "tile_row", "tile_col"]].values)
    assert kept / len(official) > 0.995  # real official places (hit by real photos) are in our grid


def test_places_covered_by_iss_mini(mini):
    got = places_covered(mini)
    assert all(mini.covers_block(b, 2018) for b in got)
    ctx = next(m for m in mini.mosaics if m.path.stem == "12_1164_2526")
    inside = {b for b in got if b.zoom == 12 and ctx.row0 <= b.row <= ctx.row0 + 8 and ctx.col0 <= b.col <= ctx.col0 + 8}
    assert len(inside) == 25  # 5 x 5 even-aligned 4x4 places fit in a 12x12 context
    assert places_covered(mini, zooms=[11]) and all(b.zoom == 11 for b in places_covered(mini, zooms=[11]))

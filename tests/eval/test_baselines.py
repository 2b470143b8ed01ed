"""Baselines of the real-photo benchmark: the exact random-ranking expectation against brute-force
enumeration, and the nadir ranking against haversine distances, on the real iss_mini photos."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from earthloc.eval.baselines import expected_random_curve, nadir_lists, places, random_lists
from earthloc.geo.footprint import haversine_km
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini


def test_expected_random_curve_equals_enumeration():
    m, depth = 7, 7
    for p in (1, 2, 3):
        hit_at = np.zeros(depth)
        perms = list(itertools.permutations(range(m)))
        for perm in perms:  # positives are places 0..p-1
            first = next(i for i, x in enumerate(perm) if x < p)
            hit_at[first:] += 1
        np.testing.assert_allclose(expected_random_curve([p], m, depth), 100 * hit_at / len(perms), atol=1e-9)
    mixed = expected_random_curve([1, 3], m, depth)
    np.testing.assert_allclose(mixed, (expected_random_curve([1], m, depth) + expected_random_curve([3], m, depth)) / 2)
    assert expected_random_curve([], m, depth).sum() == 0


def _frame(blocks: list[TileBlock]) -> pd.DataFrame:
    rows = []
    for b in blocks:
        lat, lon = b.lonlat_box_centre
        for year in (2018, 2019):  # a place in two years counts once
            rows.append({"tile": b.name, "year": year, "zoom": b.zoom, "row": b.row, "col": b.col,
                         "centre_lat": lat, "centre_lon": lon})
    return pd.DataFrame(rows)


def test_nadir_and_random_lists_on_real_photos(shared_data):
    iss = IssMini.open(shared_data)
    blocks = sorted({TileBlock.from_name(c.candidate_tile) for c in iss.contexts()})
    frame = _frame(blocks)
    assert len(places(frame)) == len(blocks)
    photos = iss.photos()[:5]
    for photo, ranked in zip(photos, nadir_lists(photos, frame, k=20)):
        lat = np.array([b.lonlat_box_centre[0] for b in ranked])
        lon = np.array([b.lonlat_box_centre[1] for b in ranked])
        d = haversine_km(photo.nadir[0], photo.nadir[1], lat, lon)
        assert (np.diff(d) >= 0).all() and len(set(ranked)) == 20
        all_d = haversine_km(photo.nadir[0], photo.nadir[1], frame.centre_lat.to_numpy(), frame.centre_lon.to_numpy())
        assert d[0] == all_d.min()
    a, b = random_lists(photos, frame, k=30, seed=1), random_lists(photos, frame, k=30, seed=1)
    assert a == b and len(set(a[0])) == 30 and a[0] != a[1]

"""The official protocol on the real EarthLoc metadata: selection radii, positives, drop rule, recall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.eval.protocol import (
    DbFootprints,
    build_area_set,
    db_corners,
    load_db_table,
    positives_by_footprint,
    recall_at,
    select_db,
    select_photos,
)
from earthloc.geo.areas import TEST_AREAS
from earthloc.geo.footprint import Footprint, haversine_km, iou
from earthloc.photos import load_photos


@pytest.fixture(scope="module")
def photos(meta):
    return load_photos(meta / "queries.csv")


@pytest.fixture(scope="module")
def db(meta) -> pd.DataFrame:
    return load_db_table(meta / "db_tiles_2021.csv")


def test_areas_are_the_official_six():
    assert TEST_AREAS == {"alps": (45, 10), "texas": (30, -95), "toshka": (23, 30), "amazon": (-3, -60),
                          "napa": (38, -122), "gobi": (40, 105)}


def test_selection_radii(photos, db):
    for name, (lat, lon) in TEST_AREAS.items():
        sel = select_photos(photos, name)
        d = np.array([haversine_km(lat, lon, *p.nadir) for p in photos])
        assert len(sel) == int((d < 2500).sum()) > 100
        assert {p.mrf for p in sel} == {p.mrf for p, x in zip(photos, d) if x < 2500}
        sub = select_db(db, name)
        dd = haversine_km(lat, lon, db.centre_lat.to_numpy(), db.centre_lon.to_numpy())
        assert list(sub.index) == list(np.flatnonzero(dd < 5000))
    with pytest.raises(InputError, match="unknown test area"):
        select_photos(photos, "atlantis")


def test_positives_against_the_authors_iou_lists(meta, photos, db):
    """Every (photo, tile) pair in the authors' IoU>=0.50 list is a positive of ours at min_iou=0.45 and
    at 0 (any intersection); pairs in the 0.25 list at 0.2. The exact threshold agreement is measured in
    test_footprint.py; here the protocol plumbing (row indices, thresholds) is what is tested."""
    ov = pd.read_csv(meta / "query_tile_overlaps.csv")
    row_of = {(z, r, c): i for i, (z, r, c) in enumerate(zip(db.zoom, db.tile_row, db.tile_col))}
    by_mrf = {p.mrf: p for p in photos}
    prepared = DbFootprints(db_corners(db))
    sample = ov.groupby("mrf").head(50).sample(n=600, random_state=0)
    for mrf, grp in sample.groupby("mrf"):
        fp = by_mrf[mrf].footprint
        any_pos = set(positives_by_footprint(fp, prepared))
        loose = set(positives_by_footprint(fp, prepared, min_iou=0.2))
        for z, r, c, g in zip(grp.zoom, grp.tile_row, grp.tile_col, grp.iou_gt):
            row = row_of[(z, r, c)]
            assert row in any_pos and row in loose
            assert positives_by_footprint(fp, db.iloc[[row]]).tolist() == [0]
    # the frame and the prepared form agree
    fp = by_mrf[sample.mrf.iloc[0]].footprint
    assert positives_by_footprint(fp, db).tolist() == positives_by_footprint(fp, prepared).tolist()


def test_positives_are_exactly_the_intersecting_tiles(photos, db):
    """Brute force with the per-pair Footprint geometry on a few photos: the vectorised prefilter and
    projection miss nothing and add nothing."""
    corners = db_corners(db)
    rng = np.random.default_rng(1)
    for p in rng.choice(np.array(photos, dtype=object), 4, replace=False):
        pos = positives_by_footprint(p.footprint, db)
        near = np.flatnonzero(haversine_km(*p.centre, db.centre_lat.to_numpy(), db.centre_lon.to_numpy()) < 1500)
        brute = [i for i in near if iou(p.footprint, Footprint(tuple(map(tuple, corners[i])))) > 0]
        assert pos.tolist() == brute


def test_drop_rule(photos, db):
    rng = np.random.default_rng(0)
    texas = select_photos(photos, "texas")
    sample = [texas[i] for i in sorted(rng.choice(len(texas), 1200, replace=False))]
    s = build_area_set(sample, db, "texas")
    assert s.n_selected == len(sample)
    assert s.n_selected == len(s.photos) + s.n_no_positive + s.n_positive_outside + s.n_no_footprint
    subset = set(s.db_rows.tolist())
    assert all(len(pos) > 0 and set(pos.tolist()) <= subset for pos in s.positives)
    # shrink the DB radius: photos whose positives fall outside are now dropped, never kept
    small = build_area_set(sample, db, "texas", db_radius_km=500)
    assert small.n_positive_outside > s.n_positive_outside
    assert len(small.photos) < len(s.photos)
    assert {p.mrf for p in small.photos} <= {p.mrf for p in s.photos}


def test_recall_at():
    hits = np.zeros((4, 100), bool)
    hits[0, 0] = True
    hits[1, 4] = hits[1, 50] = True
    hits[2, 99] = True
    r = recall_at(hits)
    assert r == {1: 25.0, 5: 50.0, 10: 50.0, 20: 50.0, 100: 75.0}
    assert recall_at(np.zeros((0, 10), bool)) == {1: 0.0, 5: 0.0, 10: 0.0, 20: 0.0, 100: 0.0}
    assert recall_at(hits[:, :3], ns=(1, 5)) == {1: 25.0, 5: 25.0}


def test_bad_db_table(tmp_path):
    p = tmp_path / "db.csv"
    p.write_text("zoom,centre_lat\n9,1\n")
    with pytest.raises(InputError, match="missing columns"):
        load_db_table(p)
    cols = "ll_lat,ll_lon,ul_lat,ul_lon,ur_lat,ur_lon,lr_lat,lr_lon,center_lat,center_lon"
    p.write_text(cols + "\n1,1,2,1,2,2,1,2,1.5,1.5\n1,1,2,1,nan,2,1,2,1.5,1.5\n")
    with pytest.raises(InputError, match="row 3"):
        load_db_table(p)

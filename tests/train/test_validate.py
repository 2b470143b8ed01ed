"""Held-out validation on a real multi-year DB, and the train / held-out split of the offline recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import shapely

from earthloc.models.registry import load_model
from earthloc.train.data import ImageCache, load_regions
from earthloc.train.datasets import overlap_free
from earthloc.train.validate import ValSet, evaluate, make_valset

EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


def test_identical_queries_give_perfect_recall(landsat_db):
    regions = load_regions([landsat_db], min_years=2)
    assert len(regions) == 6 and all(len(r.images) == 4 for r in regions)
    model = load_model("lite0-gem")
    p = model.preprocessing
    # Queries = the DB images themselves, unrotated: every query must find its own tile first.
    same = ValSet(tuple(regions), tuple((i, len(r.images) - 1, 0.0) for i, r in enumerate(regions)))
    rec = evaluate(model, same, ImageCache(96), 64, p.mean, p.std, ns=(1, 5))
    assert rec["R@1"] == 100.0 and rec["oR@1"] == 100.0
    # Cross-year, rotated queries: a real measurement, between 0 and 100, non-decreasing in N.
    vs = make_valset(regions, seed=0)
    assert {k for _, k, _ in vs.queries} <= {0, 1, 2} and len({a for _, _, a in vs.queries}) == 6
    rec = evaluate(model, vs, ImageCache(96), 64, p.mean, p.std, ns=(1, 5, 10))
    assert 0 <= rec["R@1"] <= rec["R@5"] <= rec["R@10"] <= 100
    # A hit on the own tile is a hit under the overlap rule too; the 6 z14 places overlap their neighbours.
    assert all(rec[f"oR@{n}"] >= rec[f"R@{n}"] for n in (1, 5, 10))


def test_heldout_overlapping_training_is_refused(landsat_db, tmp_path):
    p = subprocess.run([EARTHLOC, "train", "--db", str(landsat_db), "--val-db", str(landsat_db),
                        "--out", str(tmp_path / "o"), "--image-size", "64", "--no-progress"],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "overlaps training region" in p.stderr and "Traceback" not in p.stderr


def test_split_leaves_no_training_place_on_a_heldout_place(shared_data):
    import pandas as pd

    from earthloc.geo.tiles import TileBlock

    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    blocks = [TileBlock(int(z), int(r), int(c)) for z, r, c in zip(df.zoom, df.tile_row, df.tile_col)]
    held = [b for b in blocks if 95 <= b.lonlat_box_centre[1] <= 180]
    train = overlap_free([b for b in blocks if b not in set(held)], held, zoom_gap=2)
    assert 0 < len(train) < len(blocks) - len(held)
    # Independent check with shapely: no kept training box shares area with a held-out box 0-2 zooms apart.
    tb = np.asarray(shapely.box(*np.array([t.bounds for t in train]).T))
    for z in (9, 10, 11):
        hz = [h for h in held if h.zoom == z]
        hb = shapely.union_all(np.asarray(shapely.box(*np.array([h.bounds for h in hz]).T)))
        near = np.array([abs(t.zoom - z) <= 2 for t in train])
        assert shapely.area(shapely.intersection(tb[near], hb)).max() < 1e-9

"""The official protocol on a small official-layout dataset built with our own tools (see conftest.py):
real ISS photos under official names, DB images cut by our DB builder from real Sentinel-2 contexts.

Expected values are worked out independently: area membership by haversine on queries.csv, rankings
by brute-force numpy over the same descriptors, visibility by the horizon distance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from earthloc.eval.official import ROTATIONS, evaluate_areas, hit_matrix, load_dataset
from earthloc.geo.footprint import haversine_km

# what tests/eval/conftest.py puts in the fixture
DB_YEAR = 2018
OFFICIAL_PHOTOS = ("ISS052-E-43456", "ISS052-E-85735", "ISS052-E-44668", "ISS064-E-358", "ISS062-E-75554",
                   "ISS062-E-24032", "ISS055-E-7189")

AREAS = {"alps": (45, 10), "texas": (30, -95), "toshka": (23, 30), "amazon": (-3, -60), "napa": (38, -122),
         "gobi": (40, 105)}


@pytest.fixture(scope="module")
def encoded(official_dataset):
    """Descriptors of the fixture: DB at the 4 rotations, photos at the 4 rotations (one encode each)."""
    from earthloc.models.encode import encode
    from earthloc.models.registry import load_model

    db, photos, year = load_dataset(official_dataset, DB_YEAR)
    model = load_model("lite0-gem")
    db_desc = encode(model, [official_dataset / p for p in db["path"]], rotations=ROTATIONS, progress=False)
    q_desc = encode(model, [p.path for p in photos], rotations=ROTATIONS, progress=False)
    return db, photos, db_desc, q_desc


def test_dataset_loads_in_official_layout(official_dataset, iss_queries):
    db, photos, year = load_dataset(official_dataset)  # no 2021 images: the latest year present
    assert year == DB_YEAR
    assert sorted(p.mrf for p in photos) == sorted(OFFICIAL_PHOTOS)
    assert all(Path(official_dataset / p).is_file() for p in db["path"])
    assert len(db) > 10


@pytest.mark.slow
def test_area_membership_and_drop_rules(encoded, iss_queries):
    db, photos, db_desc, q_desc = encoded
    results = {a.area: a for a in evaluate_areas(photos, db, q_desc[:, :1], db_desc, "db")}
    q = iss_queries.set_index("mrf").loc[list(OFFICIAL_PHOTOS)]
    for area, (lat, lon) in AREAS.items():
        near = set(q.index[haversine_km(q.nadir_lat, q.nadir_lon, lat, lon) < 2500])
        got = results[area]
        assert set(got.mrfs) <= near and got.n_selected == len(near), area
        assert got.n_queries + sum(got.dropped.values()) == len(near)
        centre_d = haversine_km(db.centre_lat.to_numpy(), db.centre_lon.to_numpy(), lat, lon)
        assert sorted(got.db_rows.tolist()) == np.flatnonzero(centre_d < 5000).tolist()
    # ISS055-E-7189 (Texas) lies where no context covers a z9/z10 place: no positive, dropped
    assert results["texas"].dropped == {"no positive in the DB": 1}
    assert "ISS055-E-7189" not in results["texas"].mrfs and "ISS062-E-75554" in results["texas"].mrfs
    assert results["alps"].n_selected == 0 and results["napa"].n_selected == 0
    # with a 2000 km DB radius, ISS064-E-358's positives (about 2090-2130 km from the Amazon centre) fall
    # outside the area subset while its nadir (2430 km) is still selected: dropped by the second rule
    small = {a.area: a for a in evaluate_areas(photos, db, q_desc[:, :1], db_desc, "db", areas=["amazon"],
                                               db_radius_km=2000)}
    assert small["amazon"].dropped == {"a positive outside the area's DB subset": 1}
    assert "ISS064-E-358" not in small["amazon"].mrfs
    assert "ISS064-E-358" in results["amazon"].mrfs


@pytest.mark.slow
def test_db_rotated_mode_equals_brute_force(encoded):
    db, photos, db_desc, q_desc = encoded
    by_mrf = {p.mrf: i for i, p in enumerate(photos)}
    for res in evaluate_areas(photos, db, q_desc[:, :1], db_desc, "db"):
        if not res.n_queries:
            continue
        sub = db_desc[res.db_rows]  # (n, 4, D)
        for qi, mrf in enumerate(res.mrfs):
            sims = np.einsum("d,nrd->nr", q_desc[by_mrf[mrf], 0], sub).ravel()  # slot id = row*4 + rot
            order = np.argsort(-sims, kind="stable")
            want = order // 4
            got = res.ranking.rows[qi][: len(want)]
            # equal up to float ties: compare the similarity of each slot instead of ids
            np.testing.assert_allclose(sims[got * 4 + np.array([ROTATIONS.index(r) for r in
                                                                   res.ranking.rotation_deg[qi][: len(want)]])],
                                       sims[order], atol=1e-5)
            assert (res.ranking.rows[qi][len(want):] == -1).all()
            assert len(want) == 4 * len(res.db_rows)
        # 4 x n_db <= 100 slots: every kept query has all its positives within R@100
        assert res.recalls[100] == 100.0
        hits = hit_matrix(res.ranking.rows, res.positives)
        assert res.recalls[1] == pytest.approx(100 * hits[:, 0].mean())


@pytest.mark.slow
def test_query_rotated_mode_is_merged_and_visible_area_is_respected(encoded):
    from earthloc.geo.visibility import DEFAULT_ISS_ALTITUDE_KM, horizon_radius_km

    db, photos, db_desc, q_desc = encoded
    by_mrf = {p.mrf: p for p in photos}
    merged = evaluate_areas(photos, db, q_desc, db_desc[:, :1], "query")
    for res in merged:
        for row in res.ranking.rows:
            real = row[row >= 0]
            assert len(real) == len(set(real.tolist())) == len(res.db_rows)  # each DB image once
    horizon = horizon_radius_km(DEFAULT_ISS_ALTITUDE_KM)
    for res in evaluate_areas(photos, db, q_desc[:, :1], db_desc, "db", visible_area=True):
        for qi, mrf in enumerate(res.mrfs):
            rows = res.db_rows[res.ranking.rows[qi][res.ranking.rows[qi] >= 0]]
            nadir = by_mrf[mrf].nadir
            d = haversine_km(nadir[0], nadir[1], db.centre_lat.to_numpy()[rows], db.centre_lon.to_numpy()[rows])
            assert (d <= horizon + 1.0).all()


@pytest.mark.slow
def test_cli_official_end_to_end(official_dataset, encoded, tmp_path):
    """All four variants through the CLI (one encoding) agree with evaluate_areas run in-process."""
    db, photos, db_desc, q_desc = encoded
    out = tmp_path / "gobi.json"
    exe = Path(sys.executable).parent / "earthloc"
    r = subprocess.run([str(exe), "eval", "official", "--dataset", str(official_dataset), "--model", "lite0-gem",
                        "--area", "gobi", "--all-variants", "--json", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| Method | Gobi R@1/R@10/R@100 |" in r.stdout and "| kept queries | 1 |" in r.stdout
    variants = json.loads(out.read_text())["variants"]
    assert [(v["rotations"], v["visible_area"]) for v in variants] == [("db", False), ("db", True), ("query", False),
                                                                        ("query", True)]
    n_db = int((haversine_km(db.centre_lat.to_numpy(), db.centre_lon.to_numpy(), 40, 105) < 5000).sum())
    for v in variants:
        [area] = v["areas"]
        assert v["year"] == DB_YEAR and area["queries"] == ["ISS062-E-24032"] and area["n_db"] == n_db
        assert area["recalls"]["100"] == 100.0  # 4 x n_db <= 100 slots
        qd, dd = (q_desc[:, :1], db_desc) if v["rotations"] == "db" else (q_desc, db_desc[:, :1])
        [mine] = evaluate_areas(photos, db, qd, dd, v["rotations"], v["visible_area"], areas=["gobi"])
        assert {int(n): x for n, x in area["recalls"].items()} == pytest.approx(mine.recalls, abs=1e-9)


def test_cli_bad_input_is_one_line_exit_2(official_dataset, tmp_path):
    exe = Path(sys.executable).parent / "earthloc"
    for args, needle in (
        (["official", "--dataset", str(official_dataset), "--rotations", "both"], "--rotations"),
        (["photos", "--index", str(tmp_path / "no-index"), "--photos", str(official_dataset / "queries")],
         "not an index folder"),
    ):
        r = subprocess.run([str(exe), "eval", *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr


def test_bad_dataset_area_and_year_are_input_errors(official_dataset, tmp_path):
    from earthloc.errors import InputError
    from earthloc.eval.official import run_official

    with pytest.raises(InputError, match="DB folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="no DB images of 1999"):
        load_dataset(official_dataset, 1999)
    with pytest.raises(InputError, match="no queries/ folder"):
        _db_only(official_dataset, tmp_path)
    with pytest.raises(InputError, match="unknown area"):
        run_official(official_dataset, model=None, areas=["mars"])


def _db_only(dataset: Path, tmp_path: Path):
    import shutil

    shutil.copytree(dataset / "database", tmp_path / "db-only" / "database")
    return load_dataset(tmp_path / "db-only")

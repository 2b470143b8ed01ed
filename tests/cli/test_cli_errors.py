"""The console script on bad input: exit code 2, one line ``error: <where>: <problem>``, no traceback;
and `earthloc eval areas` on real metadata (CSV and official-layout folders)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from earthloc.geo.areas import TEST_AREAS
from earthloc.geo.footprint import haversine_km

EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([EARTHLOC, *args], capture_output=True, text=True, timeout=300, env=env)


def assert_input_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize(
    "text, words",
    [
        ("mrf,nadir_lat,nadir_lon\nISS1-E-1,nan,3\n", ("row 2", "nadir_lat", "not a finite number")),
        ("x,y\n1,2\n", ("needs a 'mrf' or 'path' column",)),
    ],
)
def test_bad_queries_csv(tmp_path, text, words):
    p = tmp_path / "q.csv"
    p.write_text(text)
    assert_input_error(run("eval", "areas", "--queries", str(p)), str(p), *words)


def test_malformed_names_in_a_folder(tmp_path):
    good = "@-0.164264@-48.037805@-1.052532@-48.017531@-1.208739@-46.477618@-0.320471@-46.497892@ISS063-E-38464@20200705@-0.2@-48.9@16909@1.4@.jpg"
    for bad, words in [
        (good.replace("@1.4@", "@"), "expected 14 or 8"),  # 13 fields: wrong count
        (good.replace("-0.164264", "-95.5"), "outside [-90, 90]"),
        (good.replace("-48.037805", "nan"), "not a finite number"),
    ]:
        d = tmp_path / str(abs(hash(bad)))
        d.mkdir()
        (d / bad).write_bytes(b"")
        assert_input_error(run("eval", "areas", "--queries", str(d)), bad, words)


def test_missing_and_unreadable_inputs(tmp_path, shared_data):
    assert_input_error(run("eval", "areas", "--queries", str(tmp_path / "nope.csv")), "no such file")
    b = tmp_path / "bin.csv"
    b.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    assert_input_error(run("eval", "areas", "--queries", str(b)), str(b), "unreadable CSV")
    db = tmp_path / "db.csv"
    db.write_text("zoom,center_lat\n9,1\n")
    q = shared_data / "iss_mini" / "queries.csv"
    assert_input_error(run("eval", "areas", "--queries", str(q), "--db", str(db)), str(db), "missing columns")
    real_db = shared_data / "earthloc_meta" / "db_tiles_2021.csv"
    assert_input_error(run("eval", "areas", "--queries", str(q), "--db", str(real_db), "--year", "2019"),
                       "--year", "no DB images of 2019")


def _table(stdout: str) -> dict[str, list[int]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in TEST_AREAS:
            rows[parts[0]] = [int(v) for v in parts[2:]]
    return rows


def test_areas_counts_on_real_metadata(shared_data, tmp_path):
    meta = shared_data / "earthloc_meta"
    q = pd.read_csv(meta / "earthmatch_queries.csv")
    res = run("eval", "areas", "--queries", str(meta / "earthmatch_queries.csv"))
    assert res.returncode == 0, res.stderr
    table = _table(res.stdout)
    assert set(table) == set(TEST_AREAS)
    for name, (lat, lon) in TEST_AREAS.items():
        expected = int((haversine_km(lat, lon, q.nadir_lat.to_numpy(), q.nadir_lon.to_numpy()) < 2500).sum())
        assert table[name][0] == expected

    # DB: the CSV and the same names laid out as an official folder give the same counts
    db = pd.read_csv(meta / "db_tiles_2021.csv").sample(600, random_state=0)
    small = tmp_path / "db.csv"
    db.to_csv(small, index=False)
    folder = tmp_path / "dbdir"
    for rel in db.original_name:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in pd.read_csv(meta / "queries.csv").sample(400, random_state=0).original_name:
        (photos / name).write_bytes(b"")
    by_csv = run("eval", "areas", "--queries", str(photos), "--db", str(small))
    by_dir = run("eval", "areas", "--queries", str(photos), "--db", str(folder))
    assert by_csv.returncode == 0 and by_dir.returncode == 0, by_csv.stderr + by_dir.stderr
    t_csv, t_dir = _table(by_csv.stdout), _table(by_dir.stdout)
    assert t_csv == t_dir
    for name, (lat, lon) in TEST_AREAS.items():
        n_db = int((haversine_km(lat, lon, db.center_lat.to_numpy(), db.center_lon.to_numpy()) < 5000).sum())
        assert t_csv[name][1] == n_db
    assert sum(v[1] for v in t_csv.values()) > 0 and sum(v[2] for v in t_csv.values()) > 0  # some kept


@pytest.mark.parametrize("device, words", [("cuda:99", ("--device cuda:99", "CUDA")), ("tpu", ("must be cpu, cuda",))])
def test_unusable_device_is_bad_input(tmp_path, shared_data, device, words):
    """No GPU 99 anywhere (and none at all on CI): one clear error before any work, for both commands."""
    photo = next((shared_data / "iss_mini" / "queries").glob("*.jpg"))
    assert_input_error(run("locate", str(photo), "--index", str(tmp_path), "--nadir", "0,0", "--device", device), *words)
    db = tmp_path / "db"
    db.mkdir()
    assert_input_error(run("index", "build", "--db", str(db), "--out", str(tmp_path / "ix"), "--device", device), *words)

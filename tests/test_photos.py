"""load_photos on the real CSV shapes and folders; bad CSVs name the file and row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.geo.names import parse_photo_name
from earthloc.photos import load_photos


def test_earthloc_queries_csv(shared_data):
    src = shared_data / "earthloc_meta" / "queries.csv"
    photos = load_photos(src)
    q = pd.read_csv(src)
    assert [p.mrf for p in photos] == list(q.mrf)
    p = photos[0]
    assert p.nadir == (q.nadir_lat[0], q.nadir_lon[0])
    assert p.footprint.corners[0] == (q.ll_lat[0], q.ll_lon[0])
    assert p.time.strftime("%Y%m%d") == str(q.date[0]) and p.time.tzinfo is not None
    assert p.extra["original_name"] == q.original_name[0] and p.extra["area_km2"] == q.area_km2[0]
    # no centre column: the centre comes from the footprint and lies inside it
    assert p.extra["centre_source"] == "footprint" and p.footprint.contains(*p.centre)


def test_iss_mini_csv_paths_and_centres(shared_data):
    photos = load_photos(shared_data / "iss_mini" / "queries.csv")
    q = pd.read_csv(shared_data / "iss_mini" / "queries.csv")
    assert len(photos) == len(q) == 32
    assert all(p.path is not None and p.path.is_file() and p.path.stem == p.mrf for p in photos)
    assert [p.centre for p in photos] == list(zip(q.center_lat, q.center_lon))
    dated = [p for p in photos if p.time is not None]
    assert len(dated) == q.date.notna().sum() > 0


def test_earthmatch_csv(shared_data):
    photos = load_photos(shared_data / "earthloc_meta" / "earthmatch_queries.csv")
    assert len(photos) == len(pd.read_csv(shared_data / "earthloc_meta" / "earthmatch_queries.csv"))
    assert all(p.centre is not None and p.nadir is not None and p.path is None for p in photos)
    assert {p.extra.get("tilt_code") for p in photos} >= {"LO", "HO"}


def test_folder_of_official_and_plain_names(shared_data, tmp_path):
    q = pd.read_csv(shared_data / "earthloc_meta" / "queries.csv", nrows=3)
    for name in q.original_name:
        (tmp_path / name).write_bytes(b"")  # only names matter here
    shutil.copyfile(shared_data / "iss_mini" / "queries" / "ISS050-E-70536.jpg", tmp_path / "ISS050-E-70536.jpg")
    em = "@36.4@38.2@35.4@39.3@0@1150@10@ISS050-E-70536@.jpg"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / em).write_bytes(b"")
    photos = {p.path.name: p for p in load_photos(tmp_path)}
    assert len(photos) == 5
    for name in q.original_name:
        p, n = photos[name], parse_photo_name(name)
        assert (p.mrf, p.nadir, p.footprint.corners) == (n.mrf, n.nadir, n.corners)
    plain = photos["ISS050-E-70536.jpg"]
    assert plain.mrf == "ISS050-E-70536" and plain.nadir is None and plain.footprint is None
    assert photos[em].centre == (36.4, 38.2) and photos[em].nadir == (35.4, 39.3)


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, words",
    [
        ("a,b\n1,2\n", "needs a 'mrf' or 'path' column"),
        ("", "empty CSV"),
        ("mrf,nadir_lat,nadir_lon\nISS1-E-1,nan,3\n", "row 2: nadir_lat is not a finite number"),
        ("mrf,nadir_lat,nadir_lon\nISS1-E-1,1,2\nISS1-E-2,95,3\n", "row 3: nadir_lat 95.0 outside [-90, 90]"),
        ("mrf,nadir_lat,nadir_lon\nISS1-E-1,x,3\n", "row 2: nadir_lat is not a number"),
        ("mrf,nadir_lat,nadir_lon\nISS1-E-1,1\n", "row 2: has fewer fields"),
        ("mrf,nadir_lat\nISS1-E-1,1,2\n", "row 2: has more fields"),
        ("mrf,date\nISS1-E-1,2020-01-01\n", "row 2: date is not YYYYMMDD"),
        ("mrf,ll_lat,ll_lon,ul_lat,ul_lon,ur_lat,ur_lon,lr_lat,lr_lon\nISS1-E-1,1,1,2,1,2,2,,\n", "partly empty"),
    ],
)
def test_bad_csv(tmp_path, text, words):
    src = _csv(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_photos(src)
    assert str(src) in str(err.value) and words in str(err.value)


def test_binary_and_missing_inputs(tmp_path):
    b = tmp_path / "b.csv"
    b.write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    with pytest.raises(InputError, match="unreadable CSV"):
        load_photos(b)
    with pytest.raises(InputError, match="no such file"):
        load_photos(tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_photos(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "@1@2@x.jpg").write_bytes(b"")
    (tmp_path / "bad" / ("@" + "@".join(["1"] * 14) + "@.jpg")).write_bytes(b"")
    with pytest.raises(InputError):
        load_photos(tmp_path / "bad")


def test_path_column_and_explicit_images_dir(shared_data, tmp_path):
    src = shared_data / "iss_mini" / "queries"
    (tmp_path / "imgs").mkdir()
    shutil.copyfile(src / "ISS050-E-70536.jpg", tmp_path / "imgs" / "ISS050-E-70536.jpg")
    csv = tmp_path / "list.csv"
    csv.write_text("path,time,nadir_lat,nadir_lon,altitude_km\nimgs/ISS050-E-70536.jpg,2017-02-25T10:20:30Z,35.4,39.3,404.5\n")
    (p,) = load_photos(csv)
    assert p.path == tmp_path / "imgs" / "ISS050-E-70536.jpg" and p.mrf == "ISS050-E-70536"
    assert p.time.isoformat() == "2017-02-25T10:20:30+00:00" and p.extra["time_precision"] == "exact"
    assert p.altitude_km == 404.5 and p.nadir == (35.4, 39.3)
    csv.write_text("mrf\nISS050-E-70536\nISS000-E-1\n")
    with_dir = load_photos(csv, images_dir=tmp_path / "imgs")
    assert with_dir[0].path == tmp_path / "imgs" / "ISS050-E-70536.jpg" and with_dir[1].path is None

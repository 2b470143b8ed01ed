"""Official names: exact round trip of every real name, the DB naming rule, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.geo.names import (
    DbImageName,
    EarthMatchName,
    PhotoName,
    parse_any_name,
    parse_db_name,
    parse_earthmatch_name,
    parse_photo_name,
)
from earthloc.geo.tiles import TileBlock


def test_all_photo_names_round_trip(meta):
    q = pd.read_csv(meta / "queries.csv", dtype=str, keep_default_na=False)
    assert len(q) == 17752
    parsed = [parse_photo_name(n) for n in q.original_name]
    assert [p.filename for p in parsed] == list(q.original_name)
    # the parsed values are the CSV's own columns (parsed independently by the data curators)
    assert [p.mrf for p in parsed] == list(q.mrf)
    assert [p.date.strftime("%Y%m%d") for p in parsed] == list(q.date)
    assert [p.nadir for p in parsed] == [(float(a), float(b)) for a, b in zip(q.nadir_lat, q.nadir_lon)]
    assert [p.orientation for p in parsed] == [float(v) for v in q.orientation_deg]
    assert [p.corners[2] for p in parsed] == [(float(a), float(b)) for a, b in zip(q.ur_lat, q.ur_lon)]
    # the awkward formats exist in the real data, so the round trip above really covers them
    assert any("@.0@.jpg" in n for n in q.original_name) and any("@-.9@.jpg" in n for n in q.original_name)
    assert all(isinstance(parse_any_name(n), PhotoName) for n in q.original_name[:500])


def test_all_db_names_round_trip_with_relpath(meta):
    db = pd.read_csv(meta / "db_tiles_2021.csv", dtype=str)
    assert len(db) == 8475
    parsed = [parse_db_name(n) for n in db.original_name]
    assert [p.relpath for p in parsed] == list(db.original_name)
    assert [(p.tile.zoom, p.tile.row, p.tile.col) for p in parsed] == [
        (int(z), int(r), int(c)) for z, r, c in zip(db.zoom, db.tile_row, db.tile_col)
    ]
    assert {p.year for p in parsed} == {2021}
    assert all(isinstance(parse_any_name(n), DbImageName) for n in db.original_name[:500])


def test_db_names_formatted_from_tiles_alone(meta):
    """for_tile(tile, year) rebuilds the official name from the tile only: corners, centre and folder
    exactly; the integer area exactly for >= 97% (the official area rule is reproduced up to 1 km²)."""
    db = pd.read_csv(meta / "db_tiles_2021.csv", dtype=str)
    exact = area_only = 0
    for z, r, c, name in zip(db.zoom, db.tile_row, db.tile_col, db.original_name):
        ours = DbImageName.for_tile(TileBlock(int(z), int(r), int(c)), 2021)
        if ours.relpath == name:
            exact += 1
            continue
        theirs = parse_db_name(name)
        head = lambda s: s.rsplit("@", 3)[0]  # noqa: E731  everything before area/orientation
        assert head(ours.relpath) == head(name)
        assert abs(ours.area_km2 - theirs.area_km2) <= 1, name
        area_only += 1
    assert exact / len(db) >= 0.97, (exact, area_only)


def test_earthmatch_candidate_db_names_round_trip(meta):
    """EarthMatch candidates are official DB names too (2018, zooms 8-14, 5-digit rows/cols)."""
    ec = pd.read_csv(meta / "earthmatch_candidates.csv", dtype=str)
    names = ec.original_line.str.split("__").str[-1]
    parsed = [parse_db_name(n) for n in names]
    assert [p.filename for p in parsed] == list(names)
    assert [p.tile.name for p in parsed] == list(ec.tile)


def test_earthmatch_photo_names_round_trip(shared_data):
    """The EarthMatch names of the iss_mini photos (in their provenance paths): file and folder forms."""
    iq = pd.read_csv(shared_data / "iss_mini" / "queries.csv", dtype=str, keep_default_na=False)
    seen = 0
    for mrf, src, tilt_code in zip(iq.mrf, iq.source, iq.tilt_code):
        for part in src.split("/"):
            if part.startswith("@") and part.count("@") == 9:
                name = parse_earthmatch_name(part)
                assert name.filename == part and name.mrf == mrf
                assert name.tilt == (0 if tilt_code == "LO" else int(tilt_code))
                assert isinstance(parse_any_name(part), EarthMatchName)
                seen += 1
    assert seen >= 40


GOOD = "@-0.164264@-48.037805@-1.052532@-48.017531@-1.208739@-46.477618@-0.320471@-46.497892@ISS063-E-38464@20200705@-0.2@-48.9@16909@1.4@.jpg"


@pytest.mark.parametrize(
    "bad, words",
    [
        (GOOD.replace("@1.4@", "@"), "fields"),  # wrong field count
        (GOOD.replace("-0.164264", "-91.164264"), "outside [-90, 90]"),
        (GOOD.replace("-0.164264", "nan"), "not a finite number"),
        (GOOD.replace("-48.037805", "abc"), "not a number"),
        (GOOD.replace("20200705", "20201305"), "date"),
        (GOOD.replace("ISS063-E-38464", "ISS063_E_38464"), "mission-roll-frame"),
        (GOOD.replace("@16909@", "@169.5@"), "integer"),
        (GOOD[1:], "must start with '@'"),
        ("photo.jpg", "must start with '@'"),
    ],
)
def test_malformed_photo_names(bad, words):
    with pytest.raises(InputError) as err:
        parse_photo_name(bad)
    assert words in str(err.value) and bad in str(err.value)


def test_malformed_db_and_any_names():
    good = "@-0.70311@36.56250@0.70311@36.56250@0.70311@37.96875@-0.70311@37.96875@10_0510_0616@2021@0.00000@37.26562@24504@0@.jpg"
    assert parse_db_name(good).filename == good
    with pytest.raises(InputError, match="tile id"):
        parse_db_name(good.replace("10_0510_0616", "ISS063-E-1"))
    with pytest.raises(InputError, match="4-digit year"):
        parse_db_name(good.replace("@2021@", "@21@"))
    with pytest.raises(InputError, match="leaves the"):
        parse_db_name(good.replace("10_0510_0616", "10_1022_0616"))  # block past the 1024-row grid
    with pytest.raises(InputError, match="expected 14 or 8"):
        parse_any_name("@1@2@3@.jpg")
    with pytest.raises(InputError, match="outside"):
        parse_earthmatch_name("@95.0@-72.5@-34.0@-71.0@29@1150@75@ISS050-E-35441@.jpg")

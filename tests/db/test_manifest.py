"""The DB manifest on a real DB folder (4 places cut from an iss_mini context): checksums are the files'
own, a folder without manifest is read from its official names, a killed build's journal is merged and
its torn last line ignored, a damaged manifest names itself."""

from __future__ import annotations

import hashlib

import pytest

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.errors import InputError
from earthloc.geo.names import parse_db_name
from earthloc.geo.tiles import TileBlock

PLACES = [TileBlock(12, 1164 + dr, 2526 + dc) for dr in (0, 2) for dc in (0, 2)]


@pytest.fixture(scope="module")
def db(mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("db")
    build_db(mini, PLACES, [2018], out, workers=2, progress=False)
    return out


def test_rows_describe_their_files(db):
    df = manifest.load(db)
    assert list(df.columns) == list(manifest.COLUMNS) and sorted(df.tile) == sorted(p.name for p in PLACES)
    for row in df.to_dict("records"):
        path = db / row["path"]
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == manifest.sha256_file(path)
        name = parse_db_name(path.name)
        assert (name.tile.name, name.year) == (row["tile"], row["year"])
        west, south, east, north = name.tile.bounds
        assert south < row["centre_lat"] < north and west < row["centre_lon"] < east


def test_without_manifest_the_names_give_the_same_rows_but_no_checksum(db):
    want = manifest.load(db)
    scanned = manifest.scan(db)
    cols = [c for c in manifest.COLUMNS if c != "sha256"]
    assert scanned[cols].equals(want[cols])
    assert scanned.sha256.isna().all()


def test_journal_rows_merge_and_a_torn_line_is_ignored(db, tmp_path):
    df = manifest.load(db)
    manifest.write(tmp_path, df.iloc[:2])
    journal = manifest.Journal(tmp_path)
    journal.append(df.iloc[2].to_dict())
    journal.close()
    with open(tmp_path / manifest.JOURNAL, "a") as fh:
        fh.write('{"tile": "12_1166_25')  # killed mid-line
    assert len(manifest.read_journal(tmp_path)) == 1
    merged = manifest.load(tmp_path)
    assert sorted(merged.path) == sorted(df.path.iloc[:3])
    again = manifest.Journal(tmp_path)  # reopening ends the torn line: the next row starts clean
    again.append(df.iloc[3].to_dict())
    again.close()
    assert sorted(manifest.load(tmp_path).path) == sorted(df.path)


def test_damaged_or_missing_manifest_names_itself(tmp_path):
    with pytest.raises(InputError, match="DB folder not found"):
        manifest.load(tmp_path / "nope")
    with pytest.raises(InputError, match="neither manifest.parquet"):
        manifest.load(tmp_path)
    (tmp_path / manifest.MANIFEST).write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read manifest"):
        manifest.load(tmp_path)

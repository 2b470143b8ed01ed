"""The application layer's photo gathering on the real iss_mini photos and metadata (no model needed);
localization through it is tested in tests/test_locate.py, tests/refine/test_locate_refine.py,
tests/models/test_encoders.py and tests/service/test_app.py."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from earthloc.errors import InputError
from earthloc.pipeline import LocateOptions, gather_photos


def test_gather_from_folder_file_and_csv_with_metadata(shared_data, tmp_path):
    root = shared_data / "iss_mini"
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(root / "queries" / "ISS050-E-70536.jpg", folder / "sub")
    shutil.copy(root / "queries" / "ISS051-E-12869.jpg", folder)
    bare = gather_photos([folder])
    assert sorted(p.mrf for p in bare) == ["ISS050-E-70536", "ISS051-E-12869"]  # recursive
    assert all(p.nadir is None for p in bare)
    filled = {p.mrf: p for p in gather_photos([folder], metadata=root / "queries.csv")}
    assert filled["ISS050-E-70536"].nadir == (35.4, 39.3) and filled["ISS050-E-70536"].centre == (36.4, 38.2)
    assert filled["ISS050-E-70536"].path == folder / "sub" / "ISS050-E-70536.jpg"  # the given file, not the CSV's
    from_csv = gather_photos([root / "queries.csv"])
    assert len(from_csv) == 32 and all(p.path is not None and p.path.is_file() for p in from_csv)
    only_meta = gather_photos([], metadata=root / "queries.csv", images=root / "queries")
    assert [p.mrf for p in only_meta] == [p.mrf for p in from_csv]


def test_gather_fixed_nadir_time_altitude_override_every_photo(shared_data):
    when = datetime(2017, 3, 1, 12, 30, tzinfo=UTC)
    photos = gather_photos([shared_data / "iss_mini" / "queries.csv"], nadir=(10.0, 20.0), time=when,
                           altitude_km=400.0)
    assert {(p.nadir, p.time, p.altitude_km) for p in photos} == {((10.0, 20.0), when, 400.0)}
    assert all(p.extra["time_precision"] == "exact" for p in photos)


def test_gather_bad_sources_and_options(tmp_path):
    with pytest.raises(InputError, match="nope.jpg: no such photo"):
        gather_photos([tmp_path / "nope.jpg"])
    with pytest.raises(InputError, match="no images"):
        gather_photos([tmp_path])  # an empty folder
    with pytest.raises(InputError, match="no photos given"):
        gather_photos([])
    with pytest.raises(InputError, match="top_k"):
        LocateOptions(top_k=0)

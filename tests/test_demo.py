"""The demo end to end for real, reduced to two ISS photos and the contexts of their retrieval
candidates (about 100 DB images), then rerun to check it resumes without redoing work."""

from __future__ import annotations

import pytest

from earthloc import outputs
from earthloc.demo import print_report, run_demo
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.geo.tiles import TileBlock

MRFS = ("ISS052-E-43456", "ISS062-E-150758")  # Iraq (z10/z11 contexts), Black Sea coast (z11)


@pytest.mark.slow
def test_reduced_demo_end_to_end_and_resume(shared_data, tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, shared=shared_data, mrfs=MRFS, progress=False)
    assert [r.mrf for r in report.rows] == list(MRFS)
    assert all(r.error is None for r in report.rows)
    for name in ("map.html", "localizations.geojson", "localizations.csv", "localizations.kml"):
        assert (out / name).stat().st_size > 0
    locs = outputs.read_jsonl(out / "localizations.jsonl")
    assert [loc.photo.mrf for loc in locs] == list(MRFS)
    manifest = report.n_db
    assert manifest > 20
    for row, loc in zip(report.rows, locs):
        best = loc.candidates[0]
        lat, lon = loc.photo.centre
        # the table agrees with an independent check on the written candidates
        assert row.best == best.tile.name
        assert row.hit == Footprint(best.tile.corners).contains(lat, lon)
        assert row.distance_km == pytest.approx(float(haversine_km(lat, lon, *best.tile.centre)))
        assert 1 <= row.positives <= row.searched  # the true place is in the DB and in the visible disk
        if row.first_hit_rank is not None:
            c = loc.candidates[row.first_hit_rank - 1]
            assert Footprint(TileBlock.from_name(c.tile.name).corners).contains(lat, lon)
    print_report(report)
    table = capsys.readouterr().out
    assert all(m in table for m in MRFS) and "random pick" in table and "verified" in table
    # verification ran (on by default): every photo carries its calibrated verdict and refined distance
    assert all(r.verified is not None and r.confidence is not None for r in report.rows)
    for row, loc in zip(report.rows, locs):
        if loc.refined_footprint is not None:
            assert row.refined_km == pytest.approx(float(haversine_km(*loc.photo.centre, *loc.refined_footprint.centroid)))

    # rerun: nothing rebuilt, nothing re-localized
    stamp = (out / "index" / "vectors.faiss").stat().st_mtime_ns
    lines = (out / "localizations.jsonl").read_text()
    again = run_demo(out, shared=shared_data, mrfs=MRFS, progress=False)
    assert (out / "index" / "vectors.faiss").stat().st_mtime_ns == stamp
    assert (out / "localizations.jsonl").read_text() == lines
    assert again.rows == report.rows

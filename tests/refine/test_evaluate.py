"""Refinement runs scored against NASA's truth (refine.evaluate) and their report (refine.run_report), on a
real iss_mini photo whose worldwide list holds its true place at rank 6 (ISS056-E-153176; ranks 1 and 8 overlap
NASA's footprint by 17.5 km², the others not at all). The run record is written by hand: rank 6 refined to NASA's
own footprint (60 inliers), rank 0 to its own wrong block (35 inliers), rank 5 without context imagery."""

from __future__ import annotations

import json

import pytest

from earthloc.refine.evaluate import metrics, outcomes, read_run, reranked_order
from earthloc.refine.run_report import render
from earthloc.sources.iss_mini import IssMini

MRF = "ISS056-E-153176"


@pytest.fixture(scope="module")
def loc(shared_data):
    return next(l for l in IssMini.open(shared_data).localizations() if l.photo.mrf == MRF)


def _record(loc) -> dict:
    wrong = loc.candidates[0]
    return {"mrf": MRF, "matcher": "sift", "iterations": 4, "seconds": 2.5, "error": None, "candidates": [
        {"rank": 0, "tile": wrong.tile.name, "rotation": 0, "inliers": 35, "iterations": 4, "reason": "ok",
         "footprint": [list(p) for p in wrong.footprint.corners]},
        {"rank": 6, "tile": loc.candidates[6].tile.name, "rotation": 0, "inliers": 60, "iterations": 4,
         "reason": "ok", "footprint": [list(p) for p in loc.photo.footprint.corners]},
        {"rank": 5, "tile": loc.candidates[5].tile.name, "rotation": 0, "inliers": 0, "iterations": 1,
         "reason": "no context imagery", "footprint": None}]}


def test_outcome_rerank_and_metrics(loc):
    (o,) = outcomes([_record(loc)], [loc])
    lat, lon = loc.photo.centre
    assert o.hits == [c.footprint.contains(lat, lon) for c in loc.candidates] and o.hits.index(True) == 6
    assert o.accepted == [i in (0, 6) for i in range(10)] and (o.inliers[0], o.inliers[6]) == (35, 60)
    assert o.correct[6] and not o.correct[0] and o.dist_km[6] < 30  # NASA's footprint holds its centre
    assert o.has_context == [i in (0, 6) for i in range(10)]  # rank 5: no imagery; the others: not in the run
    # overlap with the strongest verified footprint first (6, then 1 and 8 by rank), then verified 0, then the rest
    assert reranked_order(o) == [6, 1, 8, 0, 2, 3, 4, 5, 7, 9]
    m = metrics([o])
    assert (m["R@1 given"], m["R@1 re-ranked"], m["centre in refined footprint"]) == (0.0, 100.0, 100.0)
    assert m["R@10 given (ceiling)"] == 100.0 and m["seconds per photo (median)"] == 2.5


def test_read_run_skips_a_torn_last_line(loc, tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(_record(loc)) + "\n" + '{"mrf": "ISS0')
    assert [r["mrf"] for r in read_run(run)] == [MRF]


def test_report_rows(loc, tmp_path):
    (o,) = outcomes([_record(loc)], [loc])
    text = render({tmp_path / "run.jsonl": ("sift", [o])})
    assert "| sift, 4 it. | 0.0 | 0.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in text  # R@1s, R@10s, in fp
    assert f"| {MRF} | `.,,,,,H,,,` | 6* | 6 | 60 | 30 | 1 / 1 |" in text  # bar 30: one photo cannot calibrate

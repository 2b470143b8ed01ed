"""Refinement runs scored against NASA's truth (refine.evaluate), on a
real iss_mini photo whose worldwide list holds its true place at rank 6 (ISS056-E-153176; ranks 1 and 8 overlap
NASA's footprint by 17.5 km², the others not at all). The run record is written by hand: rank 6 refined to NASA's
own footprint (60 inliers), rank 0 to its own wrong block (35 inliers), rank 5 without context imagery."""

from __future__ import annotations

import json

from earthloc.refine.evaluate import metrics, outcomes, read_run, reranked_order

from .conftest import HAND_RUN_MRF


def test_outcome_rerank_and_metrics(hand_run):
    loc, record = hand_run
    (o,) = outcomes([record], [loc])
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


def test_read_run_skips_a_torn_last_line(hand_run, tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps(hand_run[1]) + "\n" + '{"mrf": "ISS0')
    assert [r["mrf"] for r in read_run(run)] == [HAND_RUN_MRF]

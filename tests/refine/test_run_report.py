"""The markdown report of refinement runs (refine.run_report) for the hand-written run of test_evaluate.py
(ISS056-E-153176: its true place at rank 6 refined to NASA's footprint, rank 0 verified but elsewhere)."""

from __future__ import annotations

from earthloc.refine.evaluate import outcomes
from earthloc.refine.run_report import render

from .conftest import HAND_RUN_MRF


def test_report_rows(hand_run, tmp_path):
    loc, record = hand_run
    (o,) = outcomes([record], [loc])
    text = render({tmp_path / "run.jsonl": ("sift", [o])})
    assert "| sift, 4 it. | 0.0 | 0.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in text  # R@1s, R@10s, in fp
    assert f"| {HAND_RUN_MRF} | `.,,,,,H,,,` | 6* | 6 | 60 | 30 | 1 / 1 |" in text  # bar 30: one photo cannot calibrate

"""Confidence calibration: the precision threshold (ties included), the verification fit on the recorded
run of the 32 real iss_mini photos (docs/results/verify_run.jsonl) with its leave-one-photo-out count,
and the JSON file (round trip, damaged file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from earthloc.errors import InputError
from earthloc.refine.calibration import (
    Calibration,
    fit_verify_calibration,
    load_calibration,
    load_verify_calibration,
    precision_threshold,
    save_calibration,
    save_verify_calibration,
)

RUN = Path(__file__).parents[2] / "docs" / "results" / "verify_run.jsonl"


@pytest.fixture(scope="module")
def run() -> list[dict]:
    recs = [json.loads(line) for line in RUN.read_text().splitlines()]
    assert len(recs) == 32
    return recs


def test_precision_threshold_is_the_lowest_cut_after_which_every_cut_qualifies():
    prob = np.array([0.6, 0.9, 0.7, 0.8])
    right = np.array([True, True, False, True])
    assert precision_threshold(prob, right, 0.95) == 0.8  # 0.9 and 0.8 right; the 0.7 cut is 2/3
    # the 0.6 cut is 3/4 >= 0.7, but the 0.7 cut (2/3) is not: every cut above t must qualify
    assert precision_threshold(prob, right, 0.7) == 0.8
    assert precision_threshold(prob, right, 0.6) == 0.6
    assert precision_threshold(prob, ~right, 0.5) > 1.0  # the most probable is wrong: nothing is confident


@pytest.mark.parametrize("right", [[True, True, False], [True, False, True]])
def test_precision_threshold_never_splits_a_tie(right):
    # 0.8 would hold one right and one wrong photo (2/3), whichever comes first in the input
    assert precision_threshold(np.array([0.9, 0.8, 0.8]), np.array(right), 0.95) == 0.9
    assert precision_threshold(np.array([0.8, 0.8, 0.8]), np.array(right), 0.95) > 1.0


def test_verify_fit_on_the_recorded_run_is_the_shipped_one_and_its_confident_answers_are_right(run):
    inliers, runner_up = [r["inliers"] for r in run], [r["runner_up"] for r in run]
    right = np.array([r["footprint_holds_centre"] for r in run])
    cal = fit_verify_calibration(inliers, runner_up, right, 0.95)
    shipped = load_verify_calibration()
    assert shipped.threshold == pytest.approx(cal.threshold) and shipped.intercept == pytest.approx(cal.intercept)
    assert (cal.n_photos, cal.n_correct) == (32, int(right.sum()))
    assert cal.coef_inliers > 0  # more inliers, more often right
    confident = np.array([cal.probability(i, u) >= cal.threshold for i, u in zip(inliers, runner_up)])
    assert confident.sum() >= 5 and right[confident].mean() >= 0.95
    # leave one photo out: fitted and thresholded on the 31 others, the held-out confident answers are right
    assert 5 <= cal.loo_confident <= 32 and cal.loo_correct / cal.loo_confident >= 0.95


def test_leave_one_out_counts_every_held_out_photo_above_the_others_threshold(run):
    # labels that the real inlier counts separate: right = at least 100 inliers (12 of the 32 photos)
    inliers = np.array([r["inliers"] for r in run])
    right = inliers >= 100
    cal = fit_verify_calibration(inliers, np.zeros(len(run)), right, 0.95)
    # held out, a wrong photo sits below every right one, hence below the others' threshold; a right one
    # sits above it unless it is the weakest right one (the others' threshold is then the next one up)
    assert cal.loo_correct == cal.loo_confident == right.sum() - 1


def test_one_class_only_cannot_be_calibrated(run):
    with pytest.raises(InputError, match="both right and wrong"):
        fit_verify_calibration([r["inliers"] for r in run], [0] * 32, [True] * 32)


def test_calibrations_round_trip_and_share_one_file(tmp_path):
    path = tmp_path / "calibration.json"
    assert load_calibration("sift", path) is None and load_verify_calibration(path) is None  # no file yet
    cal = Calibration("sift", -8.9, 0.49, 0.99, 28, 193, 60, 29, "a run")
    save_calibration(cal, path)
    ver = load_verify_calibration()
    save_verify_calibration(ver, path)
    assert load_calibration("sift", path) == cal and load_verify_calibration(path) == ver
    assert load_calibration("orb", path) is None  # never calibrated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json"]  # no temp file left


@pytest.mark.parametrize("text", ['{"matchers": {"sift": {"coef": 1.0}}, "verify": {"threshold": 0.5}}',
                                  '{"matchers": '])
def test_a_damaged_calibration_file_is_an_input_error_naming_it(tmp_path, text):
    path = tmp_path / "calibration.json"
    path.write_text(text)
    for load in (lambda: load_calibration("sift", path), lambda: load_verify_calibration(path)):
        with pytest.raises(InputError, match="not a valid calibration file") as err:
            load()
        assert err.value.where == str(path)

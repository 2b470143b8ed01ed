"""Re-ranking rule, calibration fit/storage, and context providers pasting real imagery."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate, Localization, Photo
from earthloc.refine.calibration import fit_calibration, load_calibration, save_calibration
from earthloc.refine.homography import Refinement
from earthloc.refine.rerank import rerank


def _cand(zoom: int, row: int, col: int) -> Candidate:
    t = TileBlock(zoom, row, col)
    return Candidate(t, 2021, 0, 0.0, Footprint.from_bounds(*t.bounds))


def _inner(c: Candidate, shrink: float = 0.3) -> Footprint:
    w, s, e, n = c.tile.bounds
    dx, dy = (e - w) * shrink, (n - s) * shrink
    return Footprint.from_bounds(w + dx, s + dy, e - dx, n - dy)


def test_rerank_promotes_verified_place_and_keeps_consistent_order():
    """Retrieval order: wrong place A, wrong place D (weakly 'accepted'), the right tile B, B's overlapping
    neighbour C, far wrong E (rejected). B verifies strongly: B and C (both overlap B's footprint, B more) move
    up, largest overlap first; the weak D does not jump ahead of them; A, D and E follow in retrieval order."""
    A, D, B, C, E = _cand(11, 600, 900), _cand(11, 200, 300), _cand(11, 800, 1000), _cand(11, 802, 1002), _cand(11, 100, 100)
    refs = [Refinement(A, 5, 1, reason="too few inliers (5)"),
            Refinement(D, 14, 4, footprint=_inner(D)),
            Refinement(B, 400, 4, footprint=_inner(B, 0.35)),
            Refinement(C, 0, 1, reason="too few matches (3)"),
            Refinement(E, 0, 0, reason="no context imagery")]
    loc = Localization(Photo("P"), (A, D, B, C, E))
    out = rerank(loc, refs).localization
    assert out.candidates == (B, C, A, D, E)
    assert out.refined_footprint == refs[2].footprint and out.inliers == 400


def test_rerank_without_verification_keeps_retrieval_order():
    A, B = _cand(11, 600, 900), _cand(11, 800, 1000)
    refs = [Refinement(A, 3, 1, reason="too few inliers (3)"), Refinement(B, 20, 4, footprint=_inner(B))]
    out = rerank(Localization(Photo("P"), (A, B)), refs).localization
    assert out.candidates == (A, B)  # 20 inliers is below the default verification bar
    assert out.refined_footprint == refs[1].footprint and out.inliers == 20  # still reported, unconfident


def test_calibration_fit_threshold_and_roundtrip(tmp_path):
    """Wrong refinements have 0-25 inliers, right ones 20-400: the fitted curve rises with inliers, the
    99% threshold lies above the wrong ones' bulk, and the JSON round-trips."""
    rng = np.random.default_rng(0)
    wrong, right = rng.integers(0, 26, 300), rng.integers(20, 400, 60)
    x = np.r_[wrong, right]
    y = np.r_[np.zeros(300, bool), np.ones(60, bool)]
    cal = fit_calibration(x, y, "sift", precision=0.99, n_photos=30)
    assert cal.coef > 0 and cal.probability(5) < 0.05 and cal.probability(300) > 0.99
    assert 20 <= cal.threshold_inliers <= 120
    assert cal.probability(cal.threshold_inliers) >= 0.99 > cal.probability(cal.threshold_inliers - 1)
    path = tmp_path / "cal.json"
    save_calibration(cal, path)
    assert load_calibration("sift", path) == cal and load_calibration("orb", path) is None
    assert json.loads(path.read_text())["matchers"]["sift"]["threshold_inliers"] == cal.threshold_inliers
    with pytest.raises(InputError, match="both correct and wrong"):
        fit_calibration(np.arange(5), np.zeros(5, bool), "sift")
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a valid calibration"):
        load_calibration("sift", path)


def test_shipped_calibration_loads():
    cal = load_calibration("xfeat-lg")
    assert cal is not None and cal.threshold_inliers > 0 and cal.n_photos > 0

"""Verification on real imagery: a 13-image DB cut from the iss_mini mosaics (the 9 z14 places around
ISS050-E-70536's true tile + 4 places of another photo, San Francisco Bay) and the real photo.
Retrieval's order and rotations are replaced by wrong ones; verification must put a DB image holding
NASA's centre first, at the right rotation, whatever the photo's orientation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.photos import load_photos
from earthloc.records import Candidate, Localization
from earthloc.refine.calibration import load_verify_calibration
from earthloc.refine.context import DbContexts
from earthloc.refine.matchers import load_matcher
from earthloc.refine.rerank import load_photo_rgb
from earthloc.refine.verify import DbFeatures, Verifier, XFeatExtractor, holds

PHOTO, TRUE_TILE = "ISS050-E-70536", TileBlock(14, 6410, 9928)
# NASA's centre point is rounded to 0.1 degree (36.4, 38.2); the mean of its precise footprint corners
# lies 3 km east of it, on the next DB image (TileBlock(14, 6410, 9932)), which is the true answer
NASA_CORNERS = ((36.442466, 38.15737), (36.354415, 38.146882), (36.331683, 38.308599), (36.419734, 38.319087))
NASA_CENTRE = (float(np.mean([c[0] for c in NASA_CORNERS])), float(np.mean([c[1] for c in NASA_CORNERS])))


def shows_centre(c: Candidate) -> bool:
    """The candidate's DB image holds the photo centre or a point within 0.9 km east or west of it: the
    centre lies 50 m from the border between two DB images, either is a right answer."""
    return any(holds(c, NASA_CENTRE[0], NASA_CENTRE[1] + d) for d in (-0.01, 0.0, 0.01))
ELSEWHERE = [TileBlock(14, r, c) for r in (6318, 6320) for c in (2620, 2622)]  # San Francisco Bay


@pytest.fixture(scope="module")
def db(iss_mini, tmp_path_factory):
    from earthloc.db.build import build_db
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.sources.iss_mini import IssMini

    tmp = tmp_path_factory.mktemp("verify")
    near = [TileBlock(14, TRUE_TILE.row + dr, TRUE_TILE.col + dc) for dr in (-4, 0, 4) for dc in (-4, 0, 4)]
    build_db(IssMini.open(iss_mini).source(), near + ELSEWHERE, [2018], tmp / "db", workers=2, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "ix", progress=False)
    return tmp


@pytest.fixture(scope="module")
def verifier(db):
    return Verifier(DbFeatures(XFeatExtractor()), DbContexts(db / "db", px=1536), load_matcher("xfeat-mnn"),
                    load_verify_calibration(), top_k=50)


@pytest.fixture(scope="module")
def photo(iss_mini):
    return next(p for p in load_photos(iss_mini / "queries.csv", iss_mini / "queries") if p.mrf == PHOTO)


def wrong_order(db: Path) -> Localization:
    """Candidates as a bad retrieval would give them: the elsewhere places first, the true tile last,
    every one at rotation 180 (the photo is north-up: 0 is right)."""
    from earthloc.db.manifest import load

    paths = {r.tile: str(db / "db" / r.path) for r in load(db / "db").itertuples()}
    near = [t for t in paths if TileBlock.from_name(t) not in ELSEWHERE and t != TRUE_TILE.name]
    order = [t.name for t in ELSEWHERE] + sorted(near) + [TRUE_TILE.name]
    cands = tuple(Candidate(TileBlock.from_name(t), 2018, 180, 1.0 - i / 100, Footprint(TileBlock.from_name(t).corners),
                            paths[t]) for i, t in enumerate(order))
    return Localization(photo=None, candidates=cands)


def test_verification_puts_a_true_match_first_and_refines_it(db, verifier, photo):
    loc = wrong_order(db)
    assert not shows_centre(loc.candidates[0])
    out = verifier.verify(loc, load_photo_rgb(photo.path))
    first = out.localization.candidates[0]
    assert shows_centre(first) and first.rotation_deg == 0
    assert out.inliers >= 30 and out.runner_up < out.inliers / 2  # noise reaches 12-15 similarity inliers
    assert out.localization.refined_footprint.contains(*NASA_CENTRE)
    assert out.localization.verified is True and out.localization.confidence >= 0.8
    assert out.scales == (1.0,)  # confident from the whole frame: the centre crops were not looked at
    # the wrong places did not verify: every place holding NASA's centre now comes before them
    tiles = [c.tile for c in out.localization.candidates]
    hits = [i for i, c in enumerate(out.localization.candidates) if holds(c, *NASA_CENTRE)]
    assert max(hits) < min(tiles.index(t) for t in ELSEWHERE)


def test_a_photo_turned_by_90_degrees_still_verifies(db, verifier, photo):
    rgb = np.rot90(load_photo_rgb(photo.path), 1)  # counter-clockwise: the DB image turned by 90 matches it
    out = verifier.verify(wrong_order(db), rgb)
    first = out.localization.candidates[0]
    assert shows_centre(first) and first.rotation_deg == 90
    assert out.localization.refined_footprint.contains(*NASA_CENTRE)


def test_verification_through_the_feature_store_gives_the_same_answer(db, photo):
    # the store itself (resume, size, fidelity): tests/refine/test_features.py
    from earthloc.refine.features import FeatureStore, build_store

    build_store(db / "ix", db / "db", progress=False)
    store = FeatureStore.open(db / "ix", db / "db")
    v = Verifier(DbFeatures(XFeatExtractor(), store), top_k=50, calibration=load_verify_calibration())
    out = v.verify(wrong_order(db), load_photo_rgb(photo.path))
    assert shows_centre(out.localization.candidates[0])


def test_pipeline_writes_the_verified_record_and_a_rerun_reuses_it(db, photo, tmp_path, monkeypatch):
    from earthloc.pipeline import LocateOptions, localize, open_locator

    locator = open_locator(db / "ix")
    events: list[str] = []
    options = LocateOptions(top_k=3, verify=True)
    progress = tmp_path / "run.jsonl"
    loc = localize(locator, [photo], options, progress, on_event=lambda s, n, t: events.append(s))[0]
    assert events == ["decoding", "encoding", "searching", "verifying", "refining", "done"]
    assert len(loc.candidates) == 3 and shows_centre(loc.candidates[0])
    assert loc.verified is True and loc.refined_footprint.contains(*NASA_CENTRE)
    record = json.loads(progress.read_text().splitlines()[-1])
    assert record["verified"] is True and record["inliers"] == loc.inliers
    monkeypatch.setattr(Verifier, "verify", lambda *a, **k: pytest.fail("verified again"))
    again = localize(locator, [photo], options, progress)[0]
    assert again == loc and len(progress.read_text().splitlines()) == 1


def test_similarity_ransac_finds_a_pose_hidden_among_90_percent_outliers():
    # 30 true matches under a known similarity (turn 20 degrees, scale 0.6, shift) among 270 random ones:
    # the inlier ratio of the real hard pairs, where a 4-point homography sample rarely hits
    from earthloc.refine.verify import fit_similarity

    rng = np.random.default_rng(0)
    a, s = np.radians(20), 0.6
    A = np.array([[s * np.cos(a), -s * np.sin(a), 100], [s * np.sin(a), s * np.cos(a), 40]])
    p0 = rng.uniform(0, 512, (300, 2)).astype(np.float32)
    p1 = rng.uniform(0, 512, (300, 2)).astype(np.float32)
    p1[:30] = p0[:30] @ A[:, :2].T + A[:, 2] + rng.normal(0, 1, (30, 2))
    inliers, H = fit_similarity(p0, p1)
    assert 28 <= inliers <= 40 and np.allclose(H[:2], A, atol=[[0.02, 0.02, 3], [0.02, 0.02, 3]])
    # the same pose at an implausible scale (a 512-px photo onto 20 DB pixels) is refused
    p1[:30] = p0[:30] * 0.04
    assert fit_similarity(p0, p1)[1] is None or fit_similarity(p0, p1)[0] < 20


def test_photo_centre_is_where_the_footprint_diagonals_cross():
    from earthloc.refine.verify import photo_centre

    box = Footprint.from_bounds(10.0, 40.0, 12.0, 42.0)
    lat, lon = photo_centre(box)
    assert lon == pytest.approx(11.0) and 40.0 < lat < 42.0 and lat > Footprint.from_bounds(10, 40, 12, 42).centroid[0] - 0.1
    # an oblique photo: a trapezoid wide at the far (north) side; the crossing lies south of the centroid
    trapezoid = Footprint(((40.0, 10.5), (42.0, 9.0), (42.0, 13.0), (40.0, 11.5)))
    assert photo_centre(trapezoid)[0] < trapezoid.centroid[0]


def test_distinct_places_keeps_one_verification_per_place():
    from earthloc.refine.verify import Verification, distinct_places

    c = [Candidate(TileBlock(14, 6410, 9928), 2018, 0, 0.0, Footprint(TRUE_TILE.corners), None)] * 4
    vs = [Verification(c[0], 30, 50, None, (36.40, 38.20)), Verification(c[1], 40, 60, None, (36.45, 38.25)),
          Verification(c[2], 20, 40, None, (10.0, 10.0)), Verification(c[3], 0, 5)]
    assert distinct_places(vs, 4) == [1, 2]  # 0 is 7 km from 1: the same place; 3 did not verify
    assert distinct_places(vs, 1) == [1]


def test_without_a_confident_answer_the_centre_crops_are_looked_at_too(db, photo):
    # no calibration: no answer counts as confident, so the crops are verified and their places refined;
    # the whole frame's true place still wins (it refines with the most inliers)
    v = Verifier(DbFeatures(XFeatExtractor()), DbContexts(db / "db", px=1536), load_matcher("xfeat-mnn"), top_k=50)
    out = v.verify(wrong_order(db), load_photo_rgb(photo.path))
    assert out.scales == (1.0, 0.5)
    assert shows_centre(out.localization.candidates[0]) and out.inliers >= 30
    assert out.localization.refined_footprint.contains(*NASA_CENTRE)


def test_the_centre_crop_matches_a_photo_twice_the_side_of_its_db_image(iss_mini, tmp_path):
    # ISS062-E-81917 covers ~35 km; the DB image holding its centre, 18 km (zoom 13). XFeat does not match
    # across that scale gap in the whole frame (noise level), but does in the photo's central half
    from earthloc.db.build import build_db
    from earthloc.db.manifest import load
    from earthloc.refine.features import VERIFY_PX, read_db_image
    from earthloc.refine.homography import photo_frame
    from earthloc.refine.verify import photo_views, verify_candidate
    from earthloc.sources.iss_mini import IssMini

    tile = TileBlock.from_name("13_3634_2034")
    build_db(IssMini.open(iss_mini).source(), [tile], [2018], tmp_path / "db", workers=1, progress=False)
    path = str(tmp_path / "db" / load(tmp_path / "db").path.iloc[0])
    photo = next(p for p in load_photos(iss_mini / "queries.csv", iss_mini / "queries") if p.mrf == "ISS062-E-81917")
    assert holds(Candidate(tile, 2018, 0, 0.0, Footprint(tile.corners), path), *photo.centre)
    ext = XFeatExtractor()
    rgb = load_photo_rgb(photo.path)
    whole, half = photo_views(rgb, photo_frame(rgb, VERIFY_PX), ext)
    cand = Candidate(tile, 2018, 0, 0.0, Footprint(tile.corners), path)
    db_feats = ext(read_db_image(path))
    a, b = verify_candidate(whole, db_feats, cand), verify_candidate(half, db_feats, cand)
    assert a.inliers <= 15 and b.inliers >= 30, (a.inliers, b.inliers)  # noise reaches 12-15


def test_centre_crop_maps_its_box_onto_the_whole_view():
    from earthloc.refine.homography import project
    from earthloc.refine.verify import centre_crop

    T, (x0, y0, x1, y1) = centre_crop((512, 384), 0.5)
    assert (x0, y0, x1, y1) == (128.0, 96.0, 384.0, 288.0)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    assert np.allclose(project(T, box), [[0, 0], [512, 0], [512, 384], [0, 384]])


def test_the_centre_crop_view_puts_the_photo_centre_where_the_whole_frame_does(db, photo):
    # the crop view's pose is composed back onto the whole frame: both views of the true DB image
    # must put the photo centre at about the same ground point (the crop sees the photo's middle 2x larger)
    from earthloc.geo.footprint import haversine_km
    from earthloc.refine.features import VERIFY_PX, read_db_image
    from earthloc.refine.homography import photo_frame
    from earthloc.refine.verify import photo_views, verify_candidate

    ext = XFeatExtractor()
    rgb = load_photo_rgb(photo.path)
    whole, half = photo_views(rgb, photo_frame(rgb, VERIFY_PX), ext)
    assert (whole.scale, half.scale) == (1.0, 0.5)
    true = wrong_order(db).candidates[-1]
    feats = ext(read_db_image(true.path))
    a, b = verify_candidate(whole, feats, true), verify_candidate(half, feats, true)
    assert a.inliers >= 30 and b.inliers >= 20 and a.candidate.rotation_deg == b.candidate.rotation_deg == 0
    # 1.2 km apart on this 13 km wide oblique photo: a similarity fits its middle and its whole a little
    # differently (the scales differ by ~15%); taking the crop's pixels as the frame's would halve it
    assert haversine_km(*a.centre, *b.centre) < 2.0
    scale = lambda H: np.sqrt(abs(np.linalg.det(H[:2, :2])))  # noqa: E731
    assert scale(b.homography) == pytest.approx(scale(a.homography), rel=0.25)  # both: photo frame -> DB px


def test_verification_runs_single_threaded_and_restores_the_thread_count():
    import torch

    from earthloc.refine.verify import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_db_features_without_a_store_keep_only_the_most_recent_images(db):
    paths = [c.path for c in wrong_order(db).candidates[:3]]
    feats = DbFeatures(XFeatExtractor(), keep=2)
    first = feats.get(paths[0])
    assert feats.get(paths[0]) is first  # kept
    feats.get(paths[1]), feats.get(paths[2])  # the third evicts the least recently used (paths[0])
    assert feats.get(paths[0]) is not first and np.array_equal(feats.get(paths[0]).keypoints, first.keypoints)

"""The real-photo benchmark's scoring: positives, drop rules, the reference row, baselines.

Expected values come from hand-worked cases or from columns the data curators computed themselves
(``center_in_candidate`` in iss_mini/candidates.csv), never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from earthloc.eval.baselines import expected_random_curve, nadir_lists, random_lists
from earthloc.eval.photo_benchmark import centre_positives, reference_lists, score_lists, score_reference, tiles_frame
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.photos import load_photos
from earthloc.records import Photo

# z10 blocks: 10_0400_0282 spans lon [-80.859375, -77.34375], lat about [35.46, 36.60] (mercantile bounds)
A = TileBlock(10, 400, 282)
B = TileBlock(10, 400, 284)  # east neighbour, overlaps A by half (cols 284-285)
C = TileBlock(10, 500, 700)  # far away


def test_centre_positive_is_exact_on_tile_edges():
    frame = tiles_frame([A, B, C])
    w, s, e, n = A.bounds
    assert centre_positives((s, w), frame).tolist() == [0]  # A's south-west corner: A only
    mid_lon = B.bounds[0]  # B's west edge = A's column 284 line: inside both
    assert centre_positives(((s + n) / 2, mid_lon), frame).tolist() == [0, 1]
    assert centre_positives((n + 1e-6, w + 0.01), frame).tolist() == []


def test_score_lists_hand_checked():
    inside_a_only = ((A.bounds[1] + A.bounds[3]) / 2, A.bounds[0] + 0.1)
    p1 = Photo("P1", centre=inside_a_only)
    p2 = Photo("P2", centre=inside_a_only)
    p3 = Photo("P3")  # no centre: dropped
    s = score_lists("m", [p1, p2, p3], [[C, A, B], [B, C, C], [A]], "centre", depth=3)
    assert s.n_photos == 2 and s.dropped == {"P3": "no centre truth"}
    # P1: first hit at rank 2; P2: none  -> R@1 0, R@2 50, R@3 50
    assert s.curve.tolist() == [0.0, 50.0, 50.0]
    assert [o.first_hit for o in s.outcomes] == [2, None]
    assert s.recall(5) is None  # only 3 ranks: n/a


def test_score_lists_drops_photos_without_positive_in_the_db():
    inside_a_only = ((A.bounds[1] + A.bounds[3]) / 2, A.bounds[0] + 0.1)
    far = (C.lonlat_box_centre[0], C.lonlat_box_centre[1])
    photos = [Photo("near", centre=inside_a_only), Photo("far", centre=(-45.0, 170.0))]
    db = tiles_frame([A, B])
    s = score_lists("m", photos, [[A], [B]], "centre", depth=1, db_frame=db)
    assert s.dropped == {"far": "no DB image is a centre positive"}
    assert s.curve.tolist() == [100.0]
    assert far  # C is not in the DB, so a photo there would be dropped too


def test_footprint_rule_uses_overlap():
    # a small footprint straddling A's east half and B's west half (they overlap there) plus a miss
    w, s, e, n = B.bounds
    fp = Footprint.from_bounds(w + 0.1, s + 0.1, w + 0.3, s + 0.3)
    photo = Photo("F", footprint=fp, centre=fp.centroid)
    sc = score_lists("m", [photo], [[C, B, A]], "footprint", depth=3)
    assert sc.curve.tolist() == [0.0, 100.0, 100.0]
    no_fp = score_lists("m", [Photo("G", centre=(0.0, 0.0))], [[A]], "footprint", depth=1)
    assert no_fp.dropped == {"G": "no footprint truth"}


@pytest.fixture(scope="module")
def iss_photos(shared_data):
    return load_photos(shared_data / "iss_mini" / "queries.csv")


def test_reference_lists_read_ranks_in_order(shared_data):
    lists, unknown = reference_lists(shared_data / "iss_mini" / "candidates.csv")
    raw = pd.read_csv(shared_data / "iss_mini" / "candidates.csv")
    known = raw[raw.bounds_known == 1]
    assert set(lists) == set(known.mrf)
    assert all(len(v) == 10 for v in lists.values())
    first = known[known["rank"] == 0].set_index("mrf")
    for mrf, tiles in lists.items():
        assert tiles[0].name == TileBlock(int(first.loc[mrf, "zoom"]), int(first.loc[mrf, "tile_row"]),
                                          int(first.loc[mrf, "tile_col"])).name
    assert set(unknown) == set(raw[raw.bounds_known == 0].mrf)


def test_reference_row_agrees_with_the_curators_centre_column(shared_data, iss_photos):
    csv = shared_data / "iss_mini" / "candidates.csv"
    score = score_reference(iss_photos, csv, "centre")
    raw = pd.read_csv(csv)
    raw = raw[raw.bounds_known == 1].sort_values(["mrf", "rank"])
    curated = {m: g["center_in_candidate"].to_numpy() for m, g in raw.groupby("mrf")}
    expected_first = {m: (int(np.argmax(v)) + 1 if v.any() else None) for m, v in curated.items()}
    assert {o.mrf: o.first_hit for o in score.outcomes} == expected_first
    for n in (1, 5, 10):
        want = 100.0 * np.mean([v[:n].any() for v in curated.values()])
        assert score.recall(n) == pytest.approx(want)
    assert score.recall(20) is None and score.recall(100) is None
    assert set(score.dropped) == {p.mrf for p in iss_photos} - set(curated)  # the unreferenced ones


def test_reference_footprint_rule_is_at_least_as_lenient_as_centre(shared_data, iss_photos):
    csv = shared_data / "iss_mini" / "candidates.csv"
    centre = score_reference(iss_photos, csv, "centre")
    fp = score_reference(iss_photos, csv, "footprint")
    c_first = {o.mrf: o.first_hit for o in centre.outcomes}
    by_mrf = {p.mrf: p for p in iss_photos}
    # where NASA's centre point lies inside NASA's footprint, a tile holding the point overlaps the
    # footprint, so every centre hit is a footprint hit. Not so for ISS062-E-75554: its centre point
    # (35.1, -79.2) is ~160 km from its footprint (labels are loose), and the two rules disagree.
    consistent = 0
    for o in fp.outcomes:
        p = by_mrf[o.mrf]
        if c_first.get(o.mrf) is not None and p.footprint.contains(*p.centre):
            consistent += 1
            assert o.first_hit is not None and o.first_hit <= c_first[o.mrf]
    assert consistent >= 20
    assert not by_mrf["ISS062-E-75554"].footprint.contains(*by_mrf["ISS062-E-75554"].centre)


def test_expected_random_curve_closed_form_and_simulation():
    # one positive among 10 places: R@n = n/10 exactly
    np.testing.assert_allclose(expected_random_curve([1], 10, depth=10), np.arange(1, 11) * 10.0)
    # two positives among 4: P(hit@1) = 1/2, P(hit@2) = 1 - (2/4)(1/3) = 5/6, R@3 = 1
    np.testing.assert_allclose(expected_random_curve([2], 4, depth=3), [50.0, 500 / 6, 100.0])
    # simulation: seeded random rankings of a 20-place DB agree with the expectation within noise
    tiles = [TileBlock(10, 400 + 4 * i, 282) for i in range(20)]  # disjoint blocks: one positive each
    frame = tiles_frame(tiles)
    centre = tiles[7].lonlat_box_centre
    assert len(centre_positives(centre, frame)) == 1
    photos = [Photo(f"p{i}", centre=centre) for i in range(400)]
    lists = random_lists(photos, frame, k=5, seed=1)
    sim = 100.0 * np.mean([tiles[7] in lst for lst in lists])
    assert abs(sim - 25.0) < 7  # 5 of 20 places looked at


def test_nadir_lists_sort_by_great_circle_distance():
    tiles = [TileBlock(10, 400, 282), TileBlock(10, 500, 700), TileBlock(10, 300, 100)]
    frame = tiles_frame(tiles)
    photo = Photo("n", nadir=tiles[1].lonlat_box_centre)
    out = nadir_lists([photo, Photo("none")], frame, k=3)
    assert out[0][0] == tiles[1]
    assert out[1] is None
    # hand check of the rest: block 0 (36 N, 79 W) is nearer to block 1 (around 13 S, 66 E)? compute both
    from earthloc.geo.footprint import haversine_km

    d = [haversine_km(*tiles[1].lonlat_box_centre, *t.lonlat_box_centre) for t in tiles]
    assert [t.name for t in out[0]] == [tiles[i].name for i in np.argsort(d)]


@pytest.mark.slow
def test_benchmark_end_to_end_on_a_small_index(official_dataset, shared_data, iss_photos, tmp_path):
    """Index the small DB of the official fixture (real contexts, our DB builder) and run the benchmark."""
    from earthloc.eval.photo_benchmark import benchmark
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model

    Index.build(official_dataset, load_model("lite0-gem"), tmp_path / "idx", progress=False)
    wanted = {"ISS052-E-43456", "ISS052-E-44668", "ISS062-E-24032", "ISS055-E-7189", "ISS050-E-70536"}
    photos = [p for p in iss_photos if p.mrf in wanted]
    tables = benchmark(photos, [tmp_path / "idx"], shared_data / "iss_mini" / "candidates.csv", k=20, progress=False)
    assert set(tables) == {"centre", "footprint"}
    ref, ref_same, rnd, nadir, model, whole = tables["centre"]
    assert whole.method.endswith("whole DB (no visible area)") and whole.n_photos == model.n_photos
    assert ref.method.startswith("EarthLoc worldwide") and ref.depth == 10
    # DB-ranking rows drop the same photos: those whose centre no DB place contains, found here
    # independently from the tiles' mercantile bounds
    import mercantile

    db = Index.open(tmp_path / "idx").manifest
    def inside(lat, lon, z, r, c):
        nw, se = mercantile.bounds(c, r, z), mercantile.bounds(c + 3, r + 3, z)
        return se.south <= lat <= nw.north and nw.west <= lon <= se.east
    unfindable = {p.mrf for p in photos
                  if not any(inside(*p.centre, z, r, c) for z, r, c in db[["zoom", "row", "col"]].to_numpy())}
    assert {"ISS055-E-7189", "ISS050-E-70536"} <= unfindable and len(unfindable) < len(photos)
    assert set(nadir.dropped) == set(model.dropped) == set(rnd.dropped) == unfindable
    assert model.n_photos == nadir.n_photos == len(photos) - len(unfindable)
    n_places = db["tile"].nunique()
    assert n_places <= 20  # every place fits in the 20 ranks: nadir and random reach 100 at R@20
    assert nadir.curve[n_places - 1] == 100.0 and rnd.curve[n_places - 1] == pytest.approx(100.0)
    assert model.curve[-1] == 100.0  # positives lie in each photo's visible disk, all of it is ranked
    assert whole.curve[n_places - 1] == 100.0  # the whole DB fits in the 20 ranks
    assert rnd.note.startswith("exact expectation")
    # the second reference row scores the reference lists on exactly the photos the DB rows keep
    assert {o.mrf for o in ref_same.outcomes} == {o.mrf for o in model.outcomes}


def test_iou_rule_is_stricter_than_overlap():
    from earthloc.errors import InputError
    from earthloc.eval.photo_benchmark import parse_rule

    w, s, e, n = A.bounds  # a footprint covering the west quarter of A: IoU with A = 1/4 (lon-linear, same lat span)
    fp = Footprint.from_bounds(w, s, w + (e - w) / 4, n)
    photo = Photo("Q", footprint=fp, centre=fp.centroid)
    assert score_lists("m", [photo], [[A]], "footprint", depth=1).curve.tolist() == [100.0]
    assert score_lists("m", [photo], [[A]], "iou>=0.2", depth=1).curve.tolist() == [100.0]
    assert score_lists("m", [photo], [[A]], "iou>=0.3", depth=1).curve.tolist() == [0.0]
    assert parse_rule("iou>=0.25") == ("footprint", 0.25)
    for bad in ("iou>=0", "iou>=x", "nearest"):
        with pytest.raises(InputError):
            parse_rule(bad)


def test_row_label_separates_zero_shot_from_trained_checkpoints():
    from earthloc.eval.photo_benchmark import _default_hash, method_label
    from earthloc.models.registry import load_model

    assert _default_hash("lite0-gem") == load_model("lite0-gem").checkpoint_hash is not None
    assert method_label("lite0-gem").startswith("ImageNet zero-shot")
    assert method_label("lite0-gem", trained=True).startswith("ours")

"""Rankings and the official way of counting them, on hand-built descriptors whose order is known.

Descriptors are unit vectors in the plane at chosen angles from the query (cosine = cos(angle)), so
the expected order is the order of the angles, worked out by hand below.
"""

from __future__ import annotations

import numpy as np

from earthloc.eval.official import dedupe, hit_matrix, rank_db_rotated, rank_query_rotated


def unit(deg: float) -> np.ndarray:
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))], np.float32)


def rotated_db(angles: list[list[float]]) -> np.ndarray:
    """(N, 4, 2): DB image n encoded at rotation j has the angle angles[n][j] to the query."""
    return np.stack([np.stack([unit(a) for a in row]) for row in angles])


QUERY = unit(0)[None]  # (1, 2)


def test_official_mode_keeps_rotation_duplicates_in_order():
    # A: 10,20,170,180  B: 15,90,100,120  C: 5,60,135,150 -> by angle:
    # C0(5) A0(10) B0(15) A90(20) C90(60) B90(90) B180(100) B270(120) C180(135) C270(150) A180(170) A270(180)
    db = rotated_db([[10, 20, 170, 180], [15, 90, 100, 120], [5, 60, 135, 150]])
    r = rank_db_rotated(QUERY, db, k=12)
    assert r.rows[0].tolist() == [2, 0, 1, 0, 2, 1, 1, 1, 2, 2, 0, 0]
    assert r.rotation_deg[0].tolist() == [0, 0, 0, 90, 90, 90, 180, 270, 180, 270, 180, 270]
    np.testing.assert_allclose(r.scores[0, :3], np.cos(np.radians([5, 10, 15])), atol=1e-6)


def test_duplicates_can_push_a_positive_out_of_the_first_n_slots():
    # A fills the four best slots (1..4 degrees); B is 5 degrees away.
    db = rotated_db([[1, 2, 3, 4], [5, 80, 85, 89]])
    official = rank_db_rotated(QUERY, db, k=5)
    assert official.rows[0].tolist() == [0, 0, 0, 0, 1]
    hits = hit_matrix(official.rows, [np.array([1])])
    assert hits[0].tolist() == [False, False, False, False, True]  # B not in the first 4 slots
    merged = dedupe(official)
    assert merged.rows[0].tolist() == [0, 1, -1, -1, -1]  # deduped: B second
    assert hit_matrix(merged.rows, [np.array([1])])[0, :2].tolist() == [False, True]
    assert np.isneginf(merged.scores[0, 2:]).all()


def test_official_mode_mask_and_padding():
    db = rotated_db([[1, 2, 3, 4], [5, 80, 85, 89], [30, 31, 32, 33]])
    allowed = np.array([[False, True, True]])
    r = rank_db_rotated(QUERY, db, k=10, allowed=allowed)
    # only B and C are searchable: 8 vectors, 2 empty slots
    assert r.rows[0].tolist() == [1, 2, 2, 2, 2, 1, 1, 1, -1, -1]
    assert hit_matrix(r.rows, [np.array([0])]).sum() == 0  # the masked-out A never shows up


def test_query_rotated_mode_merges_rotations():
    # DB once: A at 40, B at 100, C at 170 degrees from the unrotated query. The query "rotated" by
    # 90/180/270 is modelled by turning its vector by -90/-180/-270 degrees -> angles shift by that.
    db = np.stack([unit(40), unit(100), unit(170)])
    queries = np.stack([unit(0), unit(90), unit(180), unit(270)])[None]  # (1, 4, 2)
    r = rank_query_rotated(queries, db, k=3)
    # best angle per DB image: A: |40-0|=40 (rot 0); B: |100-90|=10 (query rot 90); C: |170-180|=10 (query rot 180)
    # B and C tie at 10 degrees; A last. Rotations in DB convention: query +90 = DB 270, query +180 = DB 180.
    assert r.rows[0, 2] == 0 and set(r.rows[0, :2].tolist()) == {1, 2}
    rot_of = dict(zip(r.rows[0].tolist(), r.rotation_deg[0].tolist()))
    assert rot_of == {0: 0, 1: 270, 2: 180}
    np.testing.assert_allclose(r.scores[0], np.cos(np.radians([10, 10, 40])), atol=1e-6)


def test_query_rotated_matches_brute_force_on_random_vectors():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(200, 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    qs = rng.normal(size=(7, 4, 16)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=2, keepdims=True)
    r = rank_query_rotated(qs, db, k=20)
    best = np.einsum("qrd,nd->qnr", qs, db).max(axis=2)  # (Q, N)
    expected = np.argsort(-best, axis=1)[:, :20]
    assert (r.rows == expected).all()
    assert all(len(set(row)) == 20 for row in r.rows.tolist())


def test_hit_matrix_multiple_queries():
    rows = np.array([[3, 1, -1], [2, 2, 0]])
    hits = hit_matrix(rows, [np.array([1, 7]), np.array([2])])
    assert hits.tolist() == [[False, True, False], [True, True, False]]

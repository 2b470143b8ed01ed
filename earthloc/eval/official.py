"""The official EarthLoc evaluation: rankings, the official way of counting them, and the protocol run.

Two ways of handling the "no up in space" rotations:

* ``"db"`` (the paper, the official code): every DB image is encoded at 0/90/180/270 degrees, giving
  ``4N`` vectors; each query (unrotated) is searched with exact L2 over all of them. The same DB image
  may therefore fill several of the top-k slots (once per rotation), and the official code counts the
  slots as they come: R@N looks at the first N *slots*, duplicates included.
* ``"query"`` (ours, cheaper index): DB images are encoded once; the query is encoded at the four
  rotations; a DB image's score is its best over the query rotations, and the ranking holds each DB
  image once ("merged").

All rankings here are :class:`Ranking` records: ``rows`` index the DB table that was searched (``-1`` =
empty slot, when fewer than k vectors were searchable); ``rotation_deg`` uses EarthLoc's convention:
the counter-clockwise rotation applied to the *DB image* that produced the slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import faiss
import numpy as np

ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)


@dataclass(frozen=True)
class Ranking:
    """Ranked DB rows per query. All arrays are ``(Q, K)``; ``scores`` are cosine similarities
    (higher is better; ``-inf`` in empty slots), ``rows`` are DB row indices (``-1`` when empty)."""

    rows: np.ndarray
    scores: np.ndarray
    rotation_deg: np.ndarray

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])


def _pad(rows: np.ndarray, scores: np.ndarray, rots: np.ndarray, k: int) -> Ranking:
    """Pad ``(Q, k')`` arrays to ``(Q, k)`` with empty slots."""
    q, have = rows.shape
    if have < k:
        rows = np.concatenate([rows, np.full((q, k - have), -1, np.int64)], axis=1)
        scores = np.concatenate([scores, np.full((q, k - have), -np.inf, np.float32)], axis=1)
        rots = np.concatenate([rots, np.zeros((q, k - have), np.int64)], axis=1)
    return Ranking(rows.astype(np.int64), scores.astype(np.float32), rots.astype(np.int64))


def _l2_search(vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """Exact L2 kNN (faiss ``IndexFlatL2``, as the official code). ``allowed``: optional ``(Q, M)`` bool
    mask of searchable vectors per query. Returns (squared distances, ids), ``(Q, k)``, id -1 = none."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    k_eff = max(1, min(k, len(vectors)))
    if allowed is None:
        dist, ids = index.search(queries, k_eff)
    else:
        dist = np.full((len(queries), k_eff), np.inf, np.float32)
        ids = np.full((len(queries), k_eff), -1, np.int64)
        for i, ok in enumerate(allowed):
            sel_ids = np.flatnonzero(ok).astype(np.int64)
            if len(sel_ids) == 0:
                continue
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(sel_ids))
            dist[i : i + 1], ids[i : i + 1] = index.search(queries[i : i + 1], k_eff, params=params)
    return dist, ids


def rank_db_rotated(
    queries: np.ndarray,
    db: np.ndarray,
    k: int = 100,
    rotations: Sequence[int] = ROTATIONS,
    allowed: np.ndarray | None = None,
) -> Ranking:
    """Official mode: search unrotated queries ``(Q, D)`` in the ``R``-times rotated DB ``(N, R, D)``.

    The ``N*R`` vectors are searched together with exact L2; slot j holds DB row ``id // R`` and
    rotation ``rotations[id % R]``. Duplicates of one DB image across rotations are *kept*, as the
    official code keeps them. ``allowed``: optional ``(Q, N)`` bool mask of DB rows each query may see.
    """
    n, r, d = db.shape
    if queries.ndim == 3:  # (Q, 1, D) from encode(..., rotations=(0,))
        queries = queries[:, 0]
    flat_allowed = None if allowed is None else np.repeat(np.asarray(allowed, bool), r, axis=1)
    dist, ids = _l2_search(db.reshape(n * r, d), queries, k, flat_allowed)
    valid = ids >= 0
    rows = np.where(valid, ids // r, -1)
    rots = np.where(valid, np.asarray(rotations)[np.where(valid, ids % r, 0)], 0)
    scores = np.where(valid, 1.0 - dist / 2.0, -np.inf)  # unit vectors: |a-b|^2 = 2 - 2 cos
    return _pad(rows, scores, rots, k)


def rank_query_rotated(
    queries: np.ndarray,
    db: np.ndarray,
    k: int = 100,
    rotations: Sequence[int] = ROTATIONS,
    allowed: np.ndarray | None = None,
) -> Ranking:
    """Merged mode: queries ``(Q, R, D)`` encoded at ``R`` rotations, DB ``(N, D)`` (or ``(N, 1, D)``) once.

    A DB row's score is its best over the query rotations; each row appears at most once. Exact: the
    top-k of the merged list is contained in the union of the per-rotation top-k lists. A query rotated
    counter-clockwise by ``a`` matches the DB image rotated by ``-a``, so ``rotation_deg = (360 - a) % 360``.
    """
    if db.ndim == 3:
        db = db[:, 0]
    q, r, _ = queries.shape
    per_rot = [_l2_search(db, queries[:, j], k, allowed) for j in range(r)]
    dist = np.concatenate([p[0] for p in per_rot], axis=1)
    ids = np.concatenate([p[1] for p in per_rot], axis=1)
    rot_of = np.repeat([(360 - a) % 360 for a in rotations], per_rot[0][1].shape[1])
    out_rows, out_scores, out_rots = [], [], []
    for i in range(q):
        order = np.argsort(dist[i], kind="stable")
        seen: set[int] = set()
        rows, scores, rots = [], [], []
        for j in order:
            row = int(ids[i, j])
            if row < 0 or row in seen:
                continue
            seen.add(row)
            rows.append(row)
            scores.append(1.0 - dist[i, j] / 2.0)
            rots.append(rot_of[j])
            if len(rows) == k:
                break
        pad = k - len(rows)
        out_rows.append(rows + [-1] * pad)
        out_scores.append(scores + [-np.inf] * pad)
        out_rots.append(rots + [0] * pad)
    return Ranking(np.array(out_rows, np.int64), np.array(out_scores, np.float32), np.array(out_rots, np.int64))


def dedupe(ranking: Ranking) -> Ranking:
    """Keep each DB row's first (best) slot only, shifting later rows up; pads with empty slots."""
    rows, scores, rots = [], [], []
    for r, s, a in zip(ranking.rows, ranking.scores, ranking.rotation_deg):
        _, first = np.unique(r, return_index=True)
        keep = np.sort(first[r[first] >= 0])
        pad = ranking.k - len(keep)
        rows.append(np.r_[r[keep], np.full(pad, -1)])
        scores.append(np.r_[s[keep], np.full(pad, -np.inf)])
        rots.append(np.r_[a[keep], np.zeros(pad, np.int64)])
    return Ranking(np.array(rows, np.int64), np.array(scores, np.float32), np.array(rots, np.int64))


def hit_matrix(rows: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """``(Q, K)`` bool: whether slot j of query i holds one of that query's positive DB rows.

    Slots are counted as they are: with a rotated DB a positive filling three slots is three hits,
    which changes nothing for R@N (any hit in the first N) but is why the first N slots may hold fewer
    than N distinct DB images. Empty slots (-1) are never hits.
    """
    rows = np.asarray(rows)
    if len(positives) != len(rows):
        raise ValueError(f"{len(rows)} rankings but {len(positives)} positive sets")
    out = np.zeros(rows.shape, dtype=bool)
    for i, pos in enumerate(positives):
        out[i] = np.isin(rows[i], np.asarray(pos, dtype=np.int64)) & (rows[i] >= 0)
    return out

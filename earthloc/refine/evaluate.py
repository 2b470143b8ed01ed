"""Evaluate refinement and re-ranking on iss_mini: runs (resumable JSON lines) and metrics.

A *run* refines every candidate of every photo once and stores one JSON line per photo: its
candidates in retrieval order with inliers, iterations, rejection reason and refined footprint.
Metrics are computed from runs, so calibration and reports never re-match anything.

Ground truth is NASA's centre point (``Photo.centre``): a candidate is a hit when the centre lies in
its 4x4 block; a refined footprint is correct when it contains the centre (as is, or enlarged 3x).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.records import Localization
from earthloc.refine.calibration import Calibration, fit_calibration
from earthloc.refine.context import ContextProvider
from earthloc.refine.homography import Refinement
from earthloc.refine.matchers import Matcher
from earthloc.refine.rerank import DEFAULT_VERIFY_INLIERS, best_refinement, refine_localization, rerank_order


# --- runs ----------------------------------------------------------------------------------------
def _ref_to_dict(rank: int, r: Refinement) -> dict:
    c = r.candidate
    return {"rank": rank, "tile": c.tile.name, "rotation": c.rotation_deg, "inliers": r.inliers,
            "iterations": r.iterations, "reason": r.reason,
            "footprint": None if r.footprint is None else [list(p) for p in r.footprint.corners]}


def run(locs: list[Localization], provider: ContextProvider, matcher: Matcher, out: Path,
        iterations: int = 4, progress: Callable | None = None) -> list[dict]:
    """Refine all candidates of ``locs``, appending one line per photo to ``out``; photos already
    in ``out`` are skipped (resume). Returns all records in ``out``."""
    done = {d["mrf"] for d in read_run(out)} if out.exists() else set()
    todo = [l for l in locs if l.photo.mrf not in done]
    for loc in (progress(todo) if progress else todo):
        t0 = time.perf_counter()
        res = refine_localization(loc, provider, matcher, iterations=iterations)
        by_cand = {id(r.candidate): r for r in res.refinements}
        rec = {"mrf": loc.photo.mrf, "matcher": matcher.name, "iterations": iterations,
               "seconds": round(time.perf_counter() - t0, 3), "error": res.localization.error,
               "candidates": [_ref_to_dict(i, by_cand[id(c)]) for i, c in enumerate(loc.candidates)
                              if id(c) in by_cand]}
        with open(out, "a") as f:  # one whole line per photo: a crash loses at most that photo
            f.write(json.dumps(rec) + "\n")
    return read_run(out)


def read_run(path: Path) -> list[dict]:
    """Records of a run file (a torn last line from a crash is ignored)."""
    recs = []
    for line in Path(path).read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return recs


# --- metrics -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefinementOutcome:
    """Per-photo facts derived from a run record and the photo's ground truth."""

    mrf: str
    hits: list[bool]  # per candidate, retrieval order: centre inside the 4x4 candidate
    visible: list[bool]  # per candidate: centre of the candidate inside the ISS visible disk
    inliers: list[int]
    accepted: list[bool]
    correct: list[bool]  # refined footprint contains the centre
    correct3: list[bool]  # ... enlarged 3x
    dist_km: list[float]  # refined footprint centroid -> true centre (nan if rejected)
    has_context: list[bool]
    footprints: list  # refined footprint per candidate, None if rejected
    candidates: tuple  # the Candidates, retrieval order
    seconds: float
    iterations: int = 4  # the run's iteration budget


def outcomes(records: list[dict], locs: list[Localization], visible_fn: Callable | None = None) -> list[RefinementOutcome]:
    """Join run records with ground truth. ``visible_fn(loc) -> list[bool]`` is the nadir filter."""
    by_mrf = {l.photo.mrf: l for l in locs}
    res = []
    for rec in records:
        loc = by_mrf[rec["mrf"]]
        if loc.photo.centre is None:
            raise InputError(loc.photo.mrf, "no true centre to score the run against")
        lat, lon = loc.photo.centre
        hits = [c.footprint.contains(lat, lon) for c in loc.candidates]
        refs = {d["rank"]: d for d in rec["candidates"]}
        inl, acc, cor, cor3, dist, ctx, cen = [], [], [], [], [], [], []
        for i in range(len(loc.candidates)):
            d = refs.get(i, {"inliers": 0, "reason": "missing", "footprint": None})
            fp = Footprint(tuple(tuple(p) for p in d["footprint"])) if d["footprint"] else None
            inl.append(int(d["inliers"]) if fp else 0)
            acc.append(fp is not None)
            cor.append(bool(fp and fp.contains(lat, lon)))
            cor3.append(bool(fp and fp.scaled(3).contains(lat, lon)))
            dist.append(float(haversine_km(lat, lon, *fp.centroid)) if fp else float("nan"))
            ctx.append(d.get("reason") != "no context imagery" and d.get("reason") != "missing")
            cen.append(fp)
        vis = visible_fn(loc) if visible_fn else [True] * len(hits)
        res.append(RefinementOutcome(rec["mrf"], hits, list(vis), inl, acc, cor, cor3, dist, ctx, cen,
                                loc.candidates, rec["seconds"], rec.get("iterations", 4)))
    return res


def reranked_order(o: RefinementOutcome, keep: list[bool] | None = None,
                   verify_inliers: int = DEFAULT_VERIFY_INLIERS) -> list[int]:
    """Candidate indices after re-ranking (the rule of :func:`earthloc.refine.rerank.rerank_order`)."""
    idx = [i for i in range(len(o.hits)) if keep is None or keep[i]]
    sub = rerank_order([o.candidates[i] for i in idx], [o.accepted[i] for i in idx], [o.inliers[i] for i in idx],
                       [o.footprints[i] for i in idx], verify_inliers)
    return [idx[j] for j in sub]


def _refined(o: RefinementOutcome, order: list[int]) -> int | None:
    """The candidate (among ``order``) whose refinement is the photo's refined footprint."""
    k = best_refinement([o.accepted[i] for i in order], [o.inliers[i] for i in order])
    return None if k is None else order[k]


def calibration_samples(outs: list[RefinementOutcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inliers, correct3, photo_index)`` over every candidate that had context imagery."""
    x, y, g = [], [], []
    for k, o in enumerate(outs):
        for i in range(len(o.hits)):
            if o.has_context[i]:
                x.append(o.inliers[i] if o.accepted[i] else 0)
                y.append(o.correct3[i])
                g.append(k)
    return np.array(x), np.array(y, bool), np.array(g)


def calibrate(outs: list[RefinementOutcome], matcher: str, precision: float, data: str = "") -> Calibration:
    """A calibration (inlier threshold for ``precision``, confidence curve) fitted on every outcome."""
    x, y, _ = calibration_samples(outs)
    return fit_calibration(x, y, matcher, precision, n_photos=len(outs), data=data)


def leave_one_photo_out(outs: list[RefinementOutcome], matcher: str, precision: float) -> list[Calibration | None]:
    """One calibration per photo, fitted on all the *other* photos (``None`` if that fit is impossible)."""
    cals: list[Calibration | None] = []
    for k in range(len(outs)):
        rest = outs[:k] + outs[k + 1:]
        try:
            cals.append(calibrate(rest, matcher, precision))
        except Exception:  # noqa: BLE001 - a fold without both classes
            cals.append(None)
    return cals


def metrics(outs: list[RefinementOutcome], cv_cals: list[Calibration | None] | None = None) -> dict:
    """Recall and footprint figures (percent / km / s) over the photos in ``outs``."""
    n = len(outs)
    pct = lambda k: 100.0 * k / n if n else float("nan")  # noqa: E731
    r1_given = sum(o.hits[0] for o in outs)
    r10 = sum(any(o.hits[:10]) for o in outs)
    r10_ctx = sum(any(h and c for h, c in zip(o.hits, o.has_context)) for o in outs)
    r1_nadir = r1_rerank = r1_nadir_rerank = 0
    fp_in = fp_in3 = fp_any = 0
    dists = []
    conf_n = conf_ok = 0
    for k, o in enumerate(outs):
        cal = cv_cals[k] if cv_cals else None
        verify = cal.threshold_inliers if cal is not None else DEFAULT_VERIFY_INLIERS
        vis_idx = [i for i in range(len(o.hits)) if o.visible[i]]
        r1_nadir += bool(vis_idx) and o.hits[vis_idx[0]]
        order = reranked_order(o, None, verify)
        r1_rerank += o.hits[order[0]]
        norder = reranked_order(o, o.visible, verify)
        r1_nadir_rerank += bool(norder) and o.hits[norder[0]]
        top = _refined(o, order)
        if top is not None:
            fp_any += 1
            fp_in += o.correct[top]
            fp_in3 += o.correct3[top]
            dists.append(o.dist_km[top])
            if cal is not None and cal.confident(o.inliers[top]):
                conf_n += 1
                conf_ok += o.correct3[top]
    secs = [o.seconds for o in outs]
    return {
        "photos": n, "R@1 given": pct(r1_given), "R@10 given (ceiling)": pct(r10),
        "R@10 with context imagery": pct(r10_ctx), "R@1 nadir filter": pct(r1_nadir),
        "R@1 re-ranked": pct(r1_rerank), "R@1 nadir filter + re-ranked": pct(r1_nadir_rerank),
        "photos with an accepted refinement": fp_any,
        "centre in refined footprint": pct(fp_in), "centre in refined footprint x3": pct(fp_in3),
        "median km refined centre -> true centre": float(np.median(dists)) if dists else float("nan"),
        "confident (CV) photos": conf_n, "confident (CV) correct x3": conf_ok,
        "seconds per photo (median)": float(np.median(secs)) if secs else float("nan"),
        "seconds per photo (mean)": float(np.mean(secs)) if secs else float("nan"),
        "candidates per photo": float(np.mean([sum(o.has_context) for o in outs])) if outs else float("nan"),
    }

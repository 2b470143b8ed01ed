"""Markdown report of refinement runs on iss_mini (docs/results/refinement.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from earthloc.atomic import atomic_path
from earthloc.geo.footprint import Footprint
from earthloc.refine.evaluate import RefinementOutcome, _refined, leave_one_photo_out, metrics, reranked_order
from earthloc.refine.rerank import DEFAULT_VERIFY_INLIERS, load_photo_rgb

_COLS = ("R@1 given", "R@1 nadir filter", "R@1 re-ranked", "R@1 nadir filter + re-ranked", "R@10 given (ceiling)",
         "R@10 with context imagery", "centre in refined footprint", "centre in refined footprint x3",
         "median km refined centre -> true centre", "seconds per photo (median)")


def outs_it(outs: list[RefinementOutcome]) -> int:
    """Iterations the run used (stored per record)."""
    return outs[0].iterations if outs else 4


def _fmt(v) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def render(runs: dict[Path, tuple[str, list[RefinementOutcome]]], precision: float = 0.99) -> str:
    """One summary row per run, then per-photo detail of the first run."""
    lines = ["# Refinement and re-ranking on iss_mini", "",
             "Regenerate (one run per matcher; runs resume, about a minute of CPU per photo for xfeat-lg):", "",
             "```", *[f"nice earthloc refine run --matcher {m} --iterations {outs_it(o)} --threads 1 --out {p}"
                      for p, (m, o) in runs.items()],
             "earthloc refine report " + " ".join(str(p) for p in runs) + f" --precision {precision} "
             "--out docs/results/refinement.md --figure docs/figures/refine_example.png", "```", "",
             "Method: every candidate of the worldwide EarthLoc list that has a context image is refined "
             "(iterative homography, retrieval rotation applied); re-ranking puts first the candidates overlapping "
             "the footprint of the strongest *verified* refinement (inliers at or above the calibrated threshold), "
             "largest overlap first. The threshold and the confidence come from a logistic fit of correct "
             "(NASA centre inside the 3x footprint) against inliers; to avoid calibrating and evaluating on the same "
             "photo, every photo's threshold here is fitted on the *other* photos (leave-one-photo-out). The nadir "
             "filter drops candidates whose block centre lies outside the disk visible from the ISS at the photo's "
             "nadir (415 km altitude). Seconds are the run's wall time per photo, so they include any load on the "
             "machine; benchmarks/matchers.py measures matchers in isolation.", ""]
    rows, cvs = [], []
    for path, (matcher, outs) in runs.items():
        cv = leave_one_photo_out(outs, matcher, precision)
        cvs.append(cv)
        rows.append((f"{matcher}, {outs_it(outs)} it.", metrics(outs, cv)))
    n = rows[0][1]["photos"] if rows else 0
    lines += [f"{n} photos (iss_mini photos with candidates); recall in percent of those photos; a candidate is a "
              "hit when NASA's centre point lies in its 4x4 block. Footprint rows are over all photos (a photo with "
              "no accepted refinement counts as a miss); distance is the median over photos with an accepted "
              "top-1 refinement.", "",
              "| matcher, iterations | " + " | ".join(_COLS) + " | accepted top-1 | confident (leave-one-photo-out) correct/total |",
              "|---" * (len(_COLS) + 3) + "|"]
    for matcher, m in rows:
        lines.append(f"| {matcher} | " + " | ".join(_fmt(m[c]) for c in _COLS) +
                     f" | {m['photos with an accepted refinement']} | {m['confident (CV) correct x3']}/{m['confident (CV) photos']} |")
    if rows:
        matcher, outs = next(iter(runs.values()))
        lines += ["", f"## Per photo ({matcher})", "",
                  "hits: candidates in retrieval order, H = its 4x4 block holds NASA's centre, . = it does not, "
                  "lower case = no context imagery (cannot be refined). Top-1: the candidate first after re-ranking "
                  "(original rank; * = hit). Refined: the candidate whose refinement gives the footprint, its inliers, "
                  "whether the footprint holds the centre (as is / x3) and the centroid's distance to the centre; "
                  "bar: the leave-one-photo-out inlier threshold used for this photo.", "",
                  "| photo | hits | top-1 | refined | inliers | bar | in / x3 | km | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for o, cal in zip(outs, cvs[0]):
            hits = "".join(("H" if h else ".") if c else ("h" if h else ",") for h, c in zip(o.hits, o.has_context))
            bar = cal.threshold_inliers if cal is not None else DEFAULT_VERIFY_INLIERS
            order = reranked_order(o, None, bar)
            t, r = order[0], _refined(o, order)
            ref = (f"{r} | {o.inliers[r]} | {bar} | {int(o.correct[r])} / {int(o.correct3[r])} | {o.dist_km[r]:.1f}"
                   if r is not None else f"- | - | {bar} | - | -")
            lines.append(f"| {o.mrf} | `{hits}` | {t}{'*' if o.hits[t] else ''} | {ref} | {o.seconds:.1f} |")
    lines += ["", f"Generated by `{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`.", ""]
    return "\n".join(lines)


def figure(loc, rec: dict, provider, out: Path) -> Path:
    """PNG: the photo beside the context of its best refined candidate, with the refined footprint (red),
    NASA's footprint (yellow, dashed), NASA's centre (cyan x) and the candidate block (white)."""
    refined = [d for d in rec["candidates"] if d["footprint"]]
    if not refined:
        raise ValueError(f"{rec['mrf']}: no accepted refinement to draw")
    best = max(refined, key=lambda d: d["inliers"])
    cand = loc.candidates[best["rank"]]
    ctx = provider.context(cand)
    h, w = ctx.image.shape[:2]

    def px(fp: Footprint):
        x, y = ctx.block.lonlat_to_pixel(fp.lons, fp.lats, w, h)
        return np.r_[x, x[:1]], np.r_[y, y[:1]]

    fig = Figure(figsize=(10, 5))  # no pyplot: no global backend, nothing to close
    a, b = fig.subplots(1, 2)
    a.imshow(load_photo_rgb(loc.photo.path))
    a.set_title(f"{loc.photo.mrf} (as published)")
    b.imshow(ctx.image)
    b.plot(*px(Footprint(tuple(tuple(p) for p in best["footprint"]))), "r-", lw=2, label=f"refined ({best['inliers']} inliers)")
    if loc.photo.footprint is not None:
        b.plot(*px(loc.photo.footprint), "y--", lw=1.5, label="NASA footprint")
    if loc.photo.centre is not None:
        cx, cy = ctx.block.lonlat_to_pixel(loc.photo.centre[1], loc.photo.centre[0], w, h)
        b.plot(cx, cy, "cx", ms=12, mew=3, label="NASA centre")
    b.plot(*px(cand.footprint), "w-", lw=1, label=f"candidate {cand.tile.name} (rank {best['rank']}, R={cand.rotation_deg})")
    b.set_title(f"12x12-tile context, z{cand.tile.zoom}")
    b.legend(loc="lower left", fontsize=7)
    for ax in (a, b):
        ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return out

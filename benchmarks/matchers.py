"""Seconds per candidate of footprint refinement, per matcher (2 torch threads), against SIFT.

One "candidate" = a full :func:`earthloc.refine.homography.refine_candidate` call (up to 4 iterations:
warp, extract, match, RANSAC), the photo's own features computed once beforehand as in re-ranking.
Two real iss_mini pairs: ISS052-E-43456 against a correct candidate (iterates) and a wrong one
(rejected after one iteration). Ratio = matcher time / SIFT time, measured in the same run.

Run: ``.venv/bin/python -m benchmarks.matchers [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks._record import record
from earthloc.config import data_dir
from earthloc.refine.context import IssMiniContexts
from earthloc.refine.homography import photo_frame, refine_candidate
from earthloc.refine.matchers import MATCHERS, load_matcher
from earthloc.refine.rerank import load_photo_rgb
from earthloc.sources.iss_mini import IssMini

PHOTO, RIGHT, WRONG = "ISS052-E-43456", 1, 6  # ranks in the worldwide list: a hit, a miss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="timed passes per matcher (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    root = data_dir() / "iss_mini"
    loc = next(l for l in IssMini.open(root).localizations() if l.photo.mrf == PHOTO)
    provider = IssMiniContexts(root)
    frame = photo_frame(load_photo_rgb(loc.photo.path))
    pairs = [(loc.candidates[i], provider.context(loc.candidates[i])) for i in (RIGHT, WRONG)]
    per_cand: dict[str, float] = {}
    for name in ("sift",) + tuple(m for m in MATCHERS if m != "sift"):
        m = load_matcher(name)
        feats = m.features(frame)
        refine_candidate(frame, *pairs[0], m, feats)  # warm-up
        times, outcome = [], []
        for _ in range(args.repeat):
            for cand, ctx in pairs:
                t0 = time.perf_counter()
                r = refine_candidate(frame, cand, ctx, m, feats)
                times.append(time.perf_counter() - t0)
                outcome.append(f"{r.inliers}{'' if r.accepted else 'x'}")
        per_cand[name] = statistics.mean(times)
        print(f"{name:10s} {per_cand[name]:7.2f} s/candidate  inliers right/wrong {outcome[:2]}", flush=True)
    base = per_cand["sift"]
    figures = "; ".join(f"{k} {v:.2f} s/cand ({v / base:.1f}x sift)" for k, v in per_cand.items())
    if args.record:
        record(f"refine seconds per candidate, {args.threads} threads, photo {PHOTO} at 512 px, up to 4 iterations: "
               + figures + f"; load avg {load:.1f} at start",
               command=f"python -m benchmarks.matchers --repeat {args.repeat} --threads {args.threads} --record")


if __name__ == "__main__":
    main()

"""Seconds per photo of the whole locate: the new default (verify the top 50 at 4 rotations, refine the
answer) against the older ``locate --refine`` (refine the top 10 at 4 iterations with xfeat-lg).

Both run in the same process on the same iss_mini photos and index, through the application layer
(:func:`earthloc.pipeline.localize`: decode, encode, search, verify/refine), each after one warm-up
photo (model and matcher loading excluded). Also prints how many answers hold NASA's centre.
Ratio = ``--refine`` seconds / new default seconds, printed last.

Run: ``.venv/bin/python -m benchmarks.verify --index out/ix-all [--photos 8] [--record]`` (the index
over all 3,311 iss_mini places: ``earthloc db build --source iss-mini``, then ``earthloc index build``;
``--local-features`` adds the DB feature store).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from benchmarks._record import record
from earthloc.pipeline import LocateOptions, localize, open_locator
from earthloc.refine.verify import holds
from earthloc.sources.iss_mini import IssMini


def seconds_per_photo(locator, photos, options: LocateOptions) -> tuple[float, int]:
    """Mean wall seconds per photo after one warm-up photo, and how many answers hold NASA's centre."""
    localize(locator, photos[:1], options)  # warm-up: loads the matcher, the store, the first DB images
    t0 = time.perf_counter()
    locs = localize(locator, photos, options)
    dt = (time.perf_counter() - t0) / len(photos)
    hits = sum(1 for p, l in zip(photos, locs) if l.candidates and holds(l.candidates[0], *p.centre))
    return dt, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, required=True, help="index over all iss_mini places")
    ap.add_argument("--photos", type=int, default=8, help="first N iss_mini photos (by the CSV's order)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = IssMini.open().photos()[:args.photos]
    locator = open_locator(args.index)
    store = (args.index / "local_features" / "meta.json").is_file()
    load = os.getloadavg()[0]
    new, new_hits = seconds_per_photo(locator, photos, LocateOptions(top_k=10, verify=True))
    old, old_hits = seconds_per_photo(locator, photos, LocateOptions(top_k=10, refine=True, matcher="xfeat-lg",
                                                                     verify=False))
    figures = (f"{len(photos)} iss_mini photos, lite0-gem index of {len(locator.index)} places, {args.threads} threads, "
               f"load avg {load:.1f} at start; new default (verify top 50 at 4 rotations, centre crops "
               f"when unsure, feature store {'yes' if store else 'no'}, refine the places): {new:.2f} s/photo, rank-1 {new_hits}/{len(photos)}; "
               f"locate --refine (top 10, 4 it., xfeat-lg): {old:.2f} s/photo, rank-1 {old_hits}/{len(photos)}; "
               f"x{old / new:.1f} faster")
    print(figures)
    print(f"ratio (--refine / new default): {old / new:.2f}")
    if args.record:
        record(figures)


if __name__ == "__main__":
    main()

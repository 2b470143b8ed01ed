"""The verification run on iss_mini (``earthloc refine verify-run``): search and verify each photo
through the application layer and record, per photo, where the first DB image holding NASA's centre
stands before and after verification, whether the refined footprint holds it, and the features the
verification calibration is fitted on (:func:`earthloc.refine.calibration.fit_verify_calibration`).
Results: docs/results/verification.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from earthloc import pipeline
from earthloc.geo.footprint import haversine_km
from earthloc.refine.evaluate import read_run
from earthloc.refine.verify import holds, photo_centre


def verify_run(locator, verifier, photos: list, out: Path, progress: Callable | None = None) -> list[dict]:
    """Search and verify each photo as ``locate`` does, one JSON line per photo in ``out`` (photos already
    there are skipped): retrieval's and verification's first-hit rank, whether the answer's DB image and
    the refined footprint hold NASA's centre, the calibration features (raw refinement inliers), seconds.

    The verifier keeps its calibration: it decides whether the centre crops are looked at, so the run
    measures what ``locate`` answers. A calibration fitted on the run is checked by running again with
    it (the figures must not move; docs/results/verification.md)."""
    done = {r["mrf"]: r for r in read_run(out)} if Path(out).exists() else {}
    options = pipeline.LocateOptions(top_k=verifier.top_k, verify=True, verify_top_k=verifier.top_k)
    todo = [p for p in photos if p.mrf not in done and p.centre is not None]
    for photo in (progress or (lambda xs: xs))(todo):
        t0 = time.perf_counter()
        prep = pipeline.prepare(locator, photo)
        desc = next(pipeline.encode(locator, [[prep]]))[0]
        loc = pipeline.search(locator, prep, desc, options)
        t1 = time.perf_counter()
        ver = verifier.verify(loc, np.asarray(prep.image))
        t2 = time.perf_counter()
        lat, lon = photo.centre
        fp = ver.localization.refined_footprint
        rec = {"mrf": photo.mrf, "retrieval_first_hit": _first_hit(loc.candidates, lat, lon),
               "verified_first_hit": _first_hit(ver.localization.candidates, lat, lon),
               "footprint_holds_centre": bool(fp is not None and fp.contains(lat, lon)),
               "centre_km": None if fp is None else float(haversine_km(lat, lon, *photo_centre(fp))),
               "inliers": ver.inliers, "runner_up": ver.runner_up,
               "search_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3)}
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        done[photo.mrf] = rec
    return [done[p.mrf] for p in photos if p.mrf in done]


def _first_hit(cands, lat: float, lon: float) -> int | None:
    return next((i + 1 for i, c in enumerate(cands) if holds(c, lat, lon)), None)

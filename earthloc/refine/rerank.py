"""Refine every candidate of a :class:`Localization`, then re-rank them by verification.

Order after re-ranking: candidates whose refinement was accepted, by inlier count (best first), then
the others (rejected or without imagery) in their retrieval order. The best accepted refinement
gives the localisation's ``refined_footprint``, ``inliers`` and ``confidence``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earthloc.errors import InputError
from earthloc.records import Localization
from earthloc.refine.calibration import Calibration
from earthloc.refine.context import ContextProvider
from earthloc.refine.homography import MIN_PHOTO_PX, WORK_PX, Refinement, photo_frame, refine_candidate
from earthloc.refine.matchers import Matcher


@dataclass(frozen=True)
class RefinedLocalization:
    """The re-ranked localisation plus one :class:`Refinement` per candidate, in the new order."""

    localization: Localization
    refinements: tuple[Refinement, ...]
    seconds: float


def load_photo_rgb(path: Path) -> np.ndarray:
    """Read a photo as ``(H, W, 3)`` uint8 RGB; unreadable or tiny -> :class:`InputError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(path, f"cannot read image ({err.__class__.__name__})") from None
    if min(arr.shape[:2]) < MIN_PHOTO_PX:
        raise InputError(path, f"photo too small to match ({arr.shape[1]}x{arr.shape[0]} px, need {MIN_PHOTO_PX})")
    return arr


def rerank(loc: Localization, refinements: list[Refinement], calibration: Calibration | None = None,
           seconds: float = 0.0) -> RefinedLocalization:
    """Order candidates by verification and fill the refined fields of ``loc``."""
    if calibration is not None:
        refinements = [calibration.apply(r) for r in refinements]
    ranked = sorted(range(len(refinements)),
                    key=lambda i: (not refinements[i].accepted, -refinements[i].inliers if refinements[i].accepted else i))
    refs = tuple(refinements[i] for i in ranked)
    best = refs[0] if refs and refs[0].accepted else None
    new = Localization(
        photo=loc.photo,
        candidates=tuple(r.candidate for r in refs),
        refined_footprint=best.footprint if best else None,
        confidence=best.confidence if best else (0.0 if calibration is not None else None),
        inliers=best.inliers if best else 0,
        error=loc.error,
    )
    return RefinedLocalization(new, refs, seconds)


def refine_localization(loc: Localization, provider: ContextProvider, matcher: Matcher,
                        calibration: Calibration | None = None, photo: np.ndarray | None = None,
                        top_k: int | None = None, iterations: int = 4, work_px: int = WORK_PX) -> RefinedLocalization:
    """Refine the first ``top_k`` candidates of ``loc`` (all when ``None``) and re-rank them.

    ``photo``: the RGB image, read from ``loc.photo.path`` when not given. Candidates beyond ``top_k``
    keep their order after the refined ones. A bad photo ends as ``error`` on the localisation.
    """
    t0 = time.perf_counter()
    cands = loc.candidates if top_k is None else loc.candidates[:top_k]
    try:
        if photo is None:
            if loc.photo.path is None:
                raise InputError(loc.photo.mrf, "photo has no image path")
            photo = load_photo_rgb(Path(loc.photo.path))
    except InputError as err:
        return RefinedLocalization(Localization(loc.photo, loc.candidates, error=str(err)), (), 0.0)
    frame = photo_frame(photo, work_px)
    feats = matcher.features(frame)
    refs = []
    for cand in cands:
        ctx = provider.context(cand)
        if ctx is None:
            refs.append(Refinement(cand, 0, 0, reason="no context imagery"))
            continue
        refs.append(refine_candidate(frame, cand, ctx, matcher, feats, iterations=iterations))
    refs += [Refinement(c, 0, 0, reason="not refined (beyond top_k)") for c in loc.candidates[len(cands):]]
    return rerank(loc, refs, calibration, time.perf_counter() - t0)

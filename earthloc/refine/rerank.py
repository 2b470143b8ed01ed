"""Refine every candidate of a :class:`Localization`, then re-rank them by verification.

Re-ranking by the refined location: the strongest *verified* refinement (accepted with at least
the calibrated inlier threshold) says where the photo is: its refined footprint F. First come the
candidates whose 4x4 block overlaps F (the official EarthLoc notion of a correct DB tile), largest
overlap (km²) first, verified or not: the tile that best covers the photo; then the other verified
candidates by inliers (another place that also matched); then everything else in retrieval order.
Weak verifications (accepted below the threshold) reorder nothing: they are as likely to be a wrong
place as a right one. The accepted refinement with the most inliers gives the localisation's
``refined_footprint``, ``inliers`` and ``confidence`` (low when it is below the threshold).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint, intersection_km2
from earthloc.models.preprocess import load_image
from earthloc.records import Candidate, Localization
from earthloc.refine.calibration import Calibration, load_calibration
from earthloc.refine.context import ContextProvider, DbContexts
from earthloc.refine.homography import MIN_PHOTO_PX, WORK_PX, Refinement, photo_frame, refine_candidate
from earthloc.refine.matchers import Matcher, load_matcher


@dataclass(frozen=True)
class RefinedLocalization:
    """The re-ranked localisation plus one :class:`Refinement` per candidate, in the new order."""

    localization: Localization
    refinements: tuple[Refinement, ...]
    seconds: float


def photo_rgb(image: Image.Image | np.ndarray, where: object) -> np.ndarray:
    """A decoded photo as ``(H, W, 3)`` uint8 RGB; smaller than :data:`MIN_PHOTO_PX` -> :class:`InputError`."""
    arr = np.asarray(image)
    if min(arr.shape[:2]) < MIN_PHOTO_PX:
        raise InputError(where, f"photo too small to match ({arr.shape[1]}x{arr.shape[0]} px, need {MIN_PHOTO_PX})")
    return arr


def load_photo_rgb(path: Path) -> np.ndarray:
    """Read a photo with the guarded loader (:func:`earthloc.models.preprocess.load_image`) as ``(H, W, 3)``
    uint8 RGB; unreadable or tiny -> :class:`InputError`."""
    return photo_rgb(load_image(path), path)


# Verification bar without a calibration: a little above the 22-24 inliers that leave-one-photo-out
# fits give for xfeat-lg and sift (99% precision) on iss_mini.
DEFAULT_VERIFY_INLIERS = 30


def best_refinement(accepted: Sequence[bool], inliers: Sequence[int]) -> int | None:
    """Index of the accepted refinement with the most inliers (earliest on ties), or ``None``."""
    ok = [i for i in range(len(accepted)) if accepted[i]]
    return max(ok, key=lambda i: (inliers[i], -i)) if ok else None


def rerank_order(candidates: Sequence[Candidate], accepted: Sequence[bool], inliers: Sequence[int],
                 footprints: Sequence[Footprint | None], verify_inliers: int) -> list[int]:
    """Indices of ``candidates`` in re-ranked order (see the module docstring); ``footprints``: each
    candidate's refined footprint (``None`` if rejected)."""
    verified = [i for i in range(len(candidates))
                if accepted[i] and inliers[i] >= verify_inliers and footprints[i] is not None]
    best = footprints[max(verified, key=lambda i: (inliers[i], -i))] if verified else None
    if best is None:
        return list(range(len(candidates)))

    def key(i: int) -> tuple:
        overlap = intersection_km2(candidates[i].footprint, best)
        if overlap > 0:
            return (0, -overlap, i)
        if i in verified:
            return (1, -inliers[i], i)
        return (2, 0, i)

    return sorted(range(len(candidates)), key=key)


def rerank(loc: Localization, refinements: list[Refinement], calibration: Calibration | None = None,
           seconds: float = 0.0) -> RefinedLocalization:
    """Order candidates by verification and fill the refined fields of ``loc``."""
    if calibration is not None:
        refinements = [calibration.apply(r) for r in refinements]
    verify = calibration.threshold_inliers if calibration is not None else DEFAULT_VERIFY_INLIERS
    ranked = rerank_order([r.candidate for r in refinements], [r.accepted for r in refinements],
                          [r.inliers for r in refinements],
                          [r.footprint for r in refinements], verify)
    refs = tuple(refinements[i] for i in ranked)
    k = best_refinement([r.accepted for r in refinements], [r.inliers for r in refinements])
    best = refinements[k] if k is not None else None
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


@dataclass(frozen=True)
class DbRefiner:
    """Refines localisations whose candidates come from a DB folder (what ``earthloc locate --refine``
    does): context imagery from the DB images, one matcher, its calibration when there is one."""

    provider: ContextProvider
    matcher: Matcher
    calibration: Calibration | None

    @classmethod
    def open(cls, db_dir: Path | None, matcher_name: str = "xfeat-lg") -> DbRefiner:
        """The refiner over ``db_dir``; a missing DB folder or unknown matcher -> :class:`InputError`."""
        if db_dir is None or not Path(db_dir).is_dir():
            raise InputError("refine", f"needs the DB images; the index's DB folder {db_dir} is not there")
        return cls(DbContexts(Path(db_dir)), load_matcher(matcher_name), load_calibration(matcher_name))

    def refine(self, loc: Localization, photo: np.ndarray | None = None, top_k: int | None = None) -> Localization:
        """``loc`` refined and re-ranked; ``photo``: its decoded RGB (read from its path when None).
        A localisation that already failed is passed through."""
        if loc.error:
            return loc
        return refine_localization(loc, self.provider, self.matcher, self.calibration, photo=photo,
                                   top_k=top_k).localization

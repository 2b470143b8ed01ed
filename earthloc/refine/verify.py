"""Verification: check the top-K retrieval candidates by local features at the photo's 4 rotations.

Retrieval ranks DB images by one global descriptor; on iss_mini its first answer holds NASA's centre
for 6 of 32 photos, while 22 have such a DB image in the top 50. Verification re-ranks those 50:

- the photo is resized to ``VERIFY_PX`` on its long side and turned by 0/90/180/270 degrees
  (``np.rot90``, exact); XFeat keypoints + descriptors are extracted once per rotation;
- every DB image is read at ``VERIFY_PX`` square and its XFeat features are extracted once per run
  (kept in memory) or read from the index's feature store (:mod:`earthloc.refine.features`);
- photo and DB features are matched by mutual nearest neighbours (cosine >= ``MIN_COSSIM``) and a
  homography is fitted by OpenCV's MAGSAC++ (``cv2.USAC_MAGSAC``) at each rotation; the rotation
  with the most inliers wins, so a wrong retrieval rotation loses nothing;
- the photo centre is projected through that homography onto the ground. The most-inlier
  candidate says where the photo is; the candidates whose DB image holds that point come first
  (most inliers first), then the other candidates by inliers, then the unverified ones in retrieval
  order.

Homographies map *photo-frame* pixels (the unrotated photo at ``VERIFY_PX``, pixel-corner
coordinates) to DB-image pixels at ``VERIFY_PX`` (pixel-corner coordinates, as :class:`TileBlock`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.records import Candidate, Localization
from earthloc.refine.calibration import VerifyCalibration, load_verify_calibration
from earthloc.refine.context import ContextProvider, DbContexts
from earthloc.refine.features import VERIFY_PX, FeatureStore, LocalFeatures, XFeatExtractor, read_db_image
from earthloc.refine.homography import photo_corners, photo_frame, project, refine_candidate
from earthloc.refine.matchers import MIN_COSSIM, Matcher, load_matcher

MAGSAC_PX = 4.0  # MAGSAC++ maximum residual, px at VERIFY_PX
MIN_MATCHES = 8  # fewer putative matches: no homography is tried
TOP_K = 50  # candidates verified per photo (chosen on iss_mini, see docs/results/verification.md)
MIN_REORDER_INLIERS = 12  # a strongest verification below this (MAGSAC fits noise at ~10-14) reorders nothing
REFINE_MATCHER = "xfeat-mnn"  # refinement of the answer: the verification's features and matching


def rotation_matrix(k: int, w: int, h: int) -> np.ndarray:
    """3x3 map from a ``w x h`` image's corner coordinates to those of ``np.rot90(img, k)`` (k * 90 degrees
    counter-clockwise on screen)."""
    R = np.eye(3)
    for _ in range(k % 4):
        step = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]], np.float64)  # (x, y) -> (y, w - x)
        R, (w, h) = step @ R, (h, w)
    return R


@dataclass(frozen=True)
class RotatedFeatures:
    """The photo's features at its 4 rotations (``rotations[k]``: turned by k * 90 degrees counter-
    clockwise) and all their descriptors stacked as float32 ``(sum N_k, 64)``, matched in one product."""

    rotations: tuple[LocalFeatures, ...]
    stacked: np.ndarray = field(repr=False)


def photo_features(frame: np.ndarray, extractor) -> RotatedFeatures:
    """Features of the photo frame turned by 0, 90, 180, 270 degrees counter-clockwise."""
    rots = tuple(extractor(np.rot90(frame, k)) for k in range(4))
    return RotatedFeatures(rots, np.concatenate([f.descriptors for f in rots]).astype(np.float32))


def rotated_matches(photo: RotatedFeatures, db: LocalFeatures, min_cossim: float = MIN_COSSIM):
    """Per rotation k, indices ``(i0, i1)`` of mutual nearest neighbours (cosine >= ``min_cossim``)
    between the photo turned by k * 90 degrees and the DB image: one matrix product for all four."""
    d1 = np.asarray(db.descriptors, np.float32)
    if len(d1) == 0 or len(photo.stacked) == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(photo.rotations)
    sim = photo.stacked @ d1.T
    fwd = sim.argmax(1)
    out, start = [], 0
    for f in photo.rotations:
        n = len(f.descriptors)
        i = np.arange(n)
        if n == 0:
            out.append((i, i))
            continue
        block, j = sim[start:start + n], fwd[start:start + n]
        keep = (block.argmax(0)[j] == i) & (block[i, j] >= min_cossim)
        out.append((i[keep], j[keep]))
        start += n
    return out


@dataclass(frozen=True)
class Verification:
    """One candidate checked against the photo.

    ``candidate.rotation_deg`` is the verified rotation when it verified (EarthLoc's convention: the DB
    image turned counter-clockwise by it matches the photo). ``homography``: photo frame -> DB image
    px at ``VERIFY_PX``; ``centre``: the photo centre on the ground (lat, lon), ``None`` unverified.
    """

    candidate: Candidate
    inliers: int
    matches: int
    homography: np.ndarray | None = field(default=None, compare=False, repr=False)
    centre: tuple[float, float] | None = None


def verify_candidate(photo: RotatedFeatures, db: LocalFeatures, candidate: Candidate,
                     ransac_px: float = MAGSAC_PX, min_cossim: float = MIN_COSSIM) -> Verification:
    """Match the photo's 4 rotated feature sets against ``db``; keep the rotation with most inliers."""
    w, h = photo.rotations[0].size
    best = Verification(candidate, 0, 0)
    for k, (f, (i0, i1)) in enumerate(zip(photo.rotations, rotated_matches(photo, db, min_cossim))):
        if len(i0) < MIN_MATCHES or len(i0) <= best.inliers:
            continue
        H, mask = cv2.findHomography(f.keypoints[i0], db.keypoints[i1], cv2.USAC_MAGSAC, ransac_px,
                                     maxIters=1000, confidence=0.999)
        inliers = int(mask.sum()) if H is not None else 0
        if inliers <= best.inliers:
            continue
        Hp = H @ rotation_matrix(k, w, h)  # unrotated photo frame -> DB image
        c = Hp @ np.array([w / 2, h / 2, 1.0])
        lon, lat = candidate.tile.pixel_to_lonlat(c[0] / c[2], c[1] / c[2], db.size[0], db.size[1])
        # photo turned CCW by k*90 is north-up <=> the DB image turned CCW by (360 - k*90) matches the photo
        cand = replace(candidate, rotation_deg=(360 - 90 * k) % 360)
        best = Verification(cand, inliers, len(i0), Hp, (float(lat), float(lon)))
    return best


def holds(candidate: Candidate, lat: float, lon: float) -> bool:
    """Whether the candidate's DB image (a lon/lat box) holds the point."""
    w, s, e, n = candidate.tile.bounds
    return s <= lat <= n and w <= lon <= e


def strongest(verifications: Sequence[Verification]) -> int | None:
    """Index of the verification with the most inliers (earliest on ties), ``None`` if none verified."""
    n = len(verifications)
    if not n or max(v.inliers for v in verifications) == 0:
        return None
    return max(range(n), key=lambda i: (verifications[i].inliers, -i))


def verified_order(verifications: Sequence[Verification], min_inliers: int = MIN_REORDER_INLIERS) -> list[int]:
    """Indices in verified order: candidates holding the strongest verification's centre (most inliers
    first), then the others by inliers, ties and the unverified in retrieval (input) order. When the
    strongest has fewer than ``min_inliers``, the retrieval order stays."""
    best = strongest(verifications)
    if best is None or verifications[best].inliers < min_inliers:
        return list(range(len(verifications)))
    lat, lon = verifications[best].centre

    def key(i: int) -> tuple:
        v = verifications[i]
        return (0 if holds(v.candidate, lat, lon) else 1, -v.inliers, i)

    return sorted(range(len(verifications)), key=key)


@dataclass(frozen=True)
class Verified:
    """A verified localisation: ``localization`` (candidates re-ranked, answer first; refined footprint,
    ``confidence``, ``inliers``, ``verified`` set) and the checks, in the new order."""

    localization: Localization
    verifications: tuple[Verification, ...]
    inliers: int  # of the strongest verification (the one that placed the photo)
    runner_up: int  # inliers of the strongest verification placing the photo elsewhere


DISAGREE_KM = 20.0  # two verified centres farther apart than this are different answers


def runner_up_inliers(verifications: Sequence[Verification], best: int | None) -> int:
    """Inliers of the strongest verification placing the photo farther than ``DISAGREE_KM`` from ``best``'s."""
    if best is None:
        return 0
    lat, lon = verifications[best].centre
    return max((v.inliers for v in verifications
                if v.centre is not None
                and haversine_km(lat, lon, *v.centre) > DISAGREE_KM), default=0)


class DbFeatures:
    """XFeat features of DB images by path: read from an index's feature store when it has one
    (:mod:`earthloc.refine.features`), else extracted on first use and kept in memory for the run."""

    def __init__(self, extractor: XFeatExtractor, store=None, px: int = VERIFY_PX):
        self.extractor, self.store, self.px = extractor, store, px
        self._memory: dict[str, LocalFeatures] = {}

    def get(self, path: str) -> LocalFeatures:
        if self.store is not None:
            got = self.store.get(path)
            if got is not None:
                return got
        if path not in self._memory:
            self._memory[path] = self.extractor(read_db_image(path, self.px))
        return self._memory[path]


class Verifier:
    """Verifies, re-ranks and refines the candidates of localisations whose DB images are on disk.

    ``top_k``: candidates verified per photo; ``refiner``: iterative refinement of the answer
    (:func:`earthloc.refine.homography.refine_candidate` against its 3x3 DB surrounding), started
    from the verified homography; ``calibration``: turns the answer's inliers and its margin over a
    disagreeing runner-up into ``confidence`` and ``verified``.
    """

    def __init__(self, db_features: DbFeatures, contexts: ContextProvider | None = None,
                 matcher: Matcher | None = None, calibration: VerifyCalibration | None = None,
                 top_k: int = TOP_K, refine_iterations: int = 2):
        self.db, self.contexts, self.matcher = db_features, contexts, matcher
        self.calibration, self.top_k, self.refine_iterations = calibration, top_k, refine_iterations

    @classmethod
    def open(cls, db_dir: Path | None, index_dir: Path | None = None, top_k: int = TOP_K,
             refine: bool = True) -> Verifier:
        """A verifier over the DB folder ``db_dir`` (features from ``index_dir``'s store when built)."""
        if db_dir is None or not Path(db_dir).is_dir():
            raise InputError("verify", f"needs the DB images; the index's DB folder {db_dir} is not there")
        extractor = XFeatExtractor()
        store = FeatureStore.open(Path(index_dir), Path(db_dir)) if index_dir is not None else None
        matcher = load_matcher(REFINE_MATCHER) if refine else None
        contexts = DbContexts(Path(db_dir), px=3 * VERIFY_PX) if refine else None
        return cls(DbFeatures(extractor, store), contexts, matcher, load_verify_calibration(), top_k)

    def verify(self, loc: Localization, photo: np.ndarray, on_stage: Callable[[str], None] = lambda stage: None) -> Verified:
        """Verify the first ``top_k`` candidates of ``loc`` against the RGB ``photo``, re-rank them and
        refine the answer; ``on_stage`` is told "verifying" and "refining" as each is done."""
        if loc.error or not loc.candidates:
            return Verified(replace(loc, inliers=0), (), 0, 0)
        frame = photo_frame(photo, VERIFY_PX)
        feats = photo_features(frame, self.db.extractor)
        head = loc.candidates[:self.top_k]
        checks = [verify_candidate(feats, self.db.get(c.path), c) if c.path else Verification(c, 0, 0) for c in head]
        top = strongest(checks)
        runner = runner_up_inliers(checks, top)
        ranked = tuple(checks[i] for i in verified_order(checks))
        inliers = checks[top].inliers if top is not None else 0
        on_stage("verifying")
        footprint = self._footprint(frame, checks[top]) if top is not None else None
        on_stage("refining")
        conf = verified = None
        if self.calibration is not None:
            conf = self.calibration.probability(inliers, runner) if footprint is not None else 0.0
            verified = bool(footprint is not None and conf >= self.calibration.threshold)
        new = replace(loc, candidates=tuple(v.candidate for v in ranked) + loc.candidates[self.top_k:],
                      refined_footprint=footprint, inliers=inliers, confidence=conf, verified=verified)
        return Verified(new, ranked, inliers, runner)

    def _footprint(self, frame: np.ndarray, best: Verification) -> Footprint:
        """The answer's footprint: refined against its DB surrounding from the verified homography, or
        the verified homography's own outline when refinement is off or fails."""
        h, w = frame.shape[:2]
        cand = best.candidate
        if self.matcher is not None and self.contexts is not None:
            ctx = self.contexts.context(cand)
            if ctx is not None:
                cell = ctx.image.shape[1] / 3  # the candidate is the middle of the 3x3 surrounding
                s = cell / VERIFY_PX
                H0 = np.array([[s, 0, cell], [0, s, cell], [0, 0, 1]]) @ best.homography
                ref = refine_candidate(frame, cand, ctx, self.matcher, iterations=self.refine_iterations, H0=H0)
                if ref.accepted:
                    return ref.footprint
        quad = project(best.homography, photo_corners(w, h))
        lon, lat = cand.tile.pixel_to_lonlat(quad[:, 0], quad[:, 1], VERIFY_PX, VERIFY_PX)
        return Footprint(tuple((float(lat[i]), float(lon[i])) for i in (3, 0, 1, 2)))

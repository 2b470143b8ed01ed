"""Confidence calibration: a logistic fit of P(correct | inliers), thresholded at a chosen precision.

A refinement is *correct* when the photo's true centre lies inside its footprint enlarged 3x about
its centroid (EarthMatch's rule). The fitted curve turns inliers into a confidence in [0, 1]; the
threshold is the smallest inlier count whose fitted probability reaches ``precision``. One entry
per matcher lives in ``earthloc/refine/calibration.json`` (shipped with the package), written by
``earthloc refine calibrate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from earthloc.atomic import write_text
from earthloc.errors import InputError

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Calibration:
    """``P(correct) = 1 / (1 + exp(-(intercept + coef * inliers)))``; confident when inliers >= ``threshold_inliers``."""

    matcher: str
    intercept: float
    coef: float
    precision: float
    threshold_inliers: int
    n_samples: int
    n_correct: int
    n_photos: int
    data: str = ""

    def probability(self, inliers: float | np.ndarray) -> float | np.ndarray:
        """Fitted P(correct) for an inlier count (float) or an array of them (same shape)."""
        z = self.intercept + self.coef * np.asarray(inliers, dtype=np.float64)
        p = 1.0 / (1.0 + np.exp(-z))
        return float(p) if np.ndim(p) == 0 else p

    def apply(self, ref):
        """The refinement with ``confidence`` set (0 for a rejected one)."""
        conf = self.probability(ref.inliers) if ref.accepted else 0.0
        return dataclasses.replace(ref, confidence=conf)

    def confident(self, inliers: int) -> bool:
        """Whether ``inliers`` reaches the threshold of the chosen precision."""
        return inliers >= self.threshold_inliers


def fit_calibration(inliers: np.ndarray, correct: np.ndarray, matcher: str, precision: float = 0.99,
                    n_photos: int = 0, data: str = "") -> Calibration:
    """Fit the logistic curve on per-candidate ``inliers`` (N,) and ``correct`` (N,) bool labels.

    Uses scikit-learn's L2-regularised logistic regression (C=1), which stays finite when the classes
    separate perfectly, as they nearly do here.
    """
    x = np.asarray(inliers, np.float64).reshape(-1, 1)
    y = np.asarray(correct, bool)
    if y.all() or not y.any():
        raise InputError("calibration data", f"needs both correct and wrong refinements ({y.sum()} of {len(y)} correct)")
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    b0, b1 = float(lr.intercept_[0]), float(lr.coef_[0, 0])
    if b1 <= 0:
        raise InputError("calibration data", "more inliers do not mean more correct refinements here; cannot calibrate")
    logit = math.log(precision / (1 - precision))
    thr = max(0, math.ceil((logit - b0) / b1))
    return Calibration(matcher, b0, b1, precision, thr, len(y), int(y.sum()), n_photos, data)


def load_calibration(matcher: str, path: Path | None = None) -> Calibration | None:
    """The stored calibration for ``matcher``, or ``None`` when that matcher was never calibrated."""
    return _read_entry(path, lambda table: table.get("matchers", {}).get(matcher), Calibration)


def _read_entry(path: Path | None, pick, make):
    """``make(**entry)`` for the entry ``pick(table)`` of the calibration JSON at ``path`` (default: the
    shipped file); ``None`` when the file or the entry is missing; a damaged file -> :class:`InputError`."""
    path = Path(path or CALIBRATION_PATH)
    if not path.is_file():
        return None
    try:
        entry = pick(json.loads(path.read_text()))
        return None if entry is None else make(**entry)
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(path, f"not a valid calibration file ({err})") from None


def save_calibration(cal: Calibration, path: Path | None = None) -> Path:
    """Add or replace ``cal.matcher``'s entry in the JSON file (atomic write)."""
    path = Path(path or CALIBRATION_PATH)
    table = json.loads(path.read_text()) if path.is_file() else {}
    table.setdefault("matchers", {})[cal.matcher] = dataclasses.asdict(cal)
    table["rule"] = "correct = true centre inside the refined footprint enlarged 3x (EarthMatch)"
    write_text(path, json.dumps(table, indent=2, sort_keys=True) + "\n")
    return path


# --- verified localisation (earthloc.refine.verify) ---------------------------------------------
VERIFY_KEY = "verify"


@dataclass(frozen=True)
class VerifyCalibration:
    """``P(answer footprint holds the true centre) = sigmoid(intercept + coef_inliers * log1p(inliers)
    + coef_runner_up * log1p(runner_up))``; ``verified`` when it reaches ``threshold``.

    ``inliers``: the answer's inliers at refinement; ``runner_up``: refinement inliers of the strongest
    one that places the photo elsewhere (a second, disagreeing answer). Fitted per photo on iss_mini;
    ``loo_*``: the leave-one-photo-out figures (fit and threshold on the other photos).
    """

    intercept: float
    coef_inliers: float
    coef_runner_up: float
    threshold: float
    precision: float
    n_photos: int
    n_correct: int
    loo_confident: int = 0
    loo_correct: int = 0
    data: str = ""

    def probability(self, inliers: float, runner_up: float) -> float:
        """Fitted P(answer right) for the answer's and the runner-up's refinement inlier counts."""
        z = self.intercept + self.coef_inliers * math.log1p(inliers) + self.coef_runner_up * math.log1p(runner_up)
        return 1.0 / (1.0 + math.exp(-z))


def _verify_x(inliers: np.ndarray, runner_up: np.ndarray) -> np.ndarray:
    return np.c_[np.log1p(np.asarray(inliers, np.float64)), np.log1p(np.asarray(runner_up, np.float64))]


def precision_threshold(prob: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """Smallest probability ``t`` such that the photos at or above ANY threshold >= t are right at least
    ``precision`` of the time (1.0 + eps, i.e. nothing confident, when no threshold qualifies).

    ``prob`` and ``correct``: (N,) per photo. Photos with equal probabilities are on the same side of
    every threshold, so a threshold can only cut after the last of a tie."""
    order = np.argsort(-prob, kind="stable")
    p, y = prob[order], np.asarray(correct, bool)[order]
    prec = np.cumsum(y) / np.arange(1, len(y) + 1)
    cut = np.r_[p[1:] != p[:-1], True]  # the positions a threshold can cut after: the end of each tie
    ok = np.flatnonzero(np.minimum.accumulate((prec >= precision) | ~cut) & cut)  # prefix where every cut qualifies
    return float(p[ok[-1]]) if len(ok) else 1.0 + 1e-9


def fit_verify_calibration(inliers, runner_up, correct, precision: float = 0.95, data: str = "") -> VerifyCalibration:
    """Logistic fit (scikit-learn, L2, C=1) of per-photo ``correct`` on the two verification features,
    its precision threshold, and the leave-one-photo-out evaluation of both."""
    x, y = _verify_x(inliers, runner_up), np.asarray(correct, bool)
    if y.all() or not y.any():
        raise InputError("calibration data", f"needs both right and wrong answers ({y.sum()} of {len(y)} right)")

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[LogisticRegression, float]:
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(xs, ys)
        return lr, precision_threshold(lr.predict_proba(xs)[:, 1], ys, precision)

    confident = right = 0
    for i in range(len(y)):  # leave one photo out: fit and threshold on the others, judge photo i
        rest = np.arange(len(y)) != i
        if y[rest].all() or not y[rest].any():
            continue
        lr, thr = fit(x[rest], y[rest])
        if lr.predict_proba(x[i:i + 1])[0, 1] >= thr:
            confident += 1
            right += int(y[i])
    lr, thr = fit(x, y)
    return VerifyCalibration(float(lr.intercept_[0]), float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), thr, precision,
                             len(y), int(y.sum()), confident, right, data)


def load_verify_calibration(path: Path | None = None) -> VerifyCalibration | None:
    """The stored verification calibration, or ``None`` when none was fitted."""
    return _read_entry(path, lambda table: table.get(VERIFY_KEY), VerifyCalibration)


def save_verify_calibration(cal: VerifyCalibration, path: Path | None = None) -> Path:
    """Add or replace the verification entry of the JSON file (atomic write)."""
    path = Path(path or CALIBRATION_PATH)
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[VERIFY_KEY] = dataclasses.asdict(cal)
    write_text(path, json.dumps(table, indent=2, sort_keys=True) + "\n")
    return path

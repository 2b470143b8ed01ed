"""Exact inner-product top-k over fp32 vectors, reading half the bytes: a bf16 scan, then an fp32 re-score.

The search is memory-bound: a photo's visible disk holds ~12k DB images, 200 MB of fp32 descriptors at
4096-d. The scan reads a bf16 *shadow* of the vectors instead (each fp32 component rounded to bf16:
half the bytes) with PyTorch's bf16 ``linear`` kernel, which also streams memory faster than an fp32
sgemm with 4 query columns (12,288 x 4096, 2 threads: 4.7 ms vs 14.6 ms). The query is split into two
bf16 parts (``q ~ hi + lo``) so that its own rounding does not count. :func:`bounds` turns each bf16
score into a rigorous interval around the exact score; rows whose interval reaches the k-th best
lower end are re-scored from the fp32 vectors, so the top k is the fp32 top k.

oneDNN compiles a kernel per matrix shape (~0.5 ms each), so ranges are scanned in a fixed set of
lengths (:data:`BUCKETS`, up to 20% padding, read past the range end and dropped) whose kernels are
compiled once, when the shadow is made. The shadow lives in RAM only (+50% while searching).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 65536  # longest single scan call, and the step when making the shadow
BUCKETS = tuple(sorted({min(CHUNK, 64 * int(np.ceil(1.2**j))) for j in range(60)}))  # scan lengths, 64..65536
_U32 = 2.0**-24  # unit roundoff of fp32
_OUT_BF16 = 2.0**-8  # relative error of rounding the kernel's fp32 accumulator to its bf16 output (2x margin)


@dataclass(frozen=True)
class Shadow:
    """bf16 copy of an (V, D) float32 matrix, with what the error bounds need.

    ``hi``: (V, D) ``torch.bfloat16``; ``eps``: max over vectors of ``||v - hi(v)||`` (L2);
    ``vmax``: max over vectors of ``||v||``.
    """

    hi: torch.Tensor
    eps: float
    vmax: float


def make_shadow(vectors: np.ndarray, n_queries: int = 4) -> Shadow:
    """The bf16 shadow of ``vectors`` (V, D) float32, made chunk by chunk; compiles the scan kernels
    for ``n_queries`` query rows (the photo's rotations) at every bucket length that fits."""
    hi = torch.empty(vectors.shape, dtype=torch.bfloat16)
    eps = vmax = 0.0
    with torch.inference_mode():
        for a in range(0, len(vectors), CHUNK):
            v = torch.from_numpy(np.ascontiguousarray(vectors[a:a + CHUNK], dtype=np.float32))
            h = v.to(torch.bfloat16)
            hi[a:a + len(v)] = h
            # norms in fp32 (v - h is exact in fp32); 1e-5 covers their rounding
            eps = max(eps, float((v - h.float()).norm(dim=1).max()) * (1 + 1e-5))
            vmax = max(vmax, float(v.norm(dim=1).max()) * (1 + 1e-5))
        q = torch.zeros((2 * n_queries, vectors.shape[1]), dtype=torch.bfloat16)
        for n in BUCKETS:
            if n <= len(hi):
                F.linear(q, hi[:n])
    return Shadow(hi, eps, vmax)


def bounds(shadow: Shadow, q: np.ndarray, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)``, each ``(sum of range lengths, R)`` float64: for vector ``v`` of the ranges (in
    order) and query row ``q_r`` of ``q`` (R, D), ``lower <= q_r . v <= upper`` (exact real product).

    Error terms of the bf16 score ``s = hi(q_r) . hi(v) + lo(q_r) . hi(v)``: the rounded vector
    (``||q|| eps``), what the two-part query leaves out (``||q - hi - lo|| vmax``), fp32 accumulation of
    D exact bf16 products in any order (``D u (||hi|| + ||lo||) vmax``) and the bf16 rounding of both
    outputs (``2^-8 (|s_hi| + |s_lo|)``).
    """
    q32 = torch.from_numpy(np.array(q, dtype=np.float32))  # a copy: q may be a read-only view (Ray results)
    qh = q32.to(torch.bfloat16)
    ql = (q32 - qh.float()).to(torch.bfloat16)
    q64, n_all, parts = q32.double(), len(shadow.hi), []
    with torch.inference_mode():
        qq = torch.cat([qh, ql])
        for a, b in ranges:
            while a < b:  # bucketed lengths: shifted back at the end of the matrix, extra columns dropped
                n = min(b - a, CHUNK)
                size = next(s for s in BUCKETS if s >= n)
                a0 = max(0, min(a, n_all - size))
                parts.append(F.linear(qq, shadow.hi[a0:a0 + size])[:, a - a0:a - a0 + n])
                a += n
        if not parts:
            return np.zeros((0, len(q))), np.zeros((0, len(q)))
        s = torch.cat(parts, dim=1).double()  # (2R, n)
        r = len(q)
        mid = s[:r] + s[r:]
        rest = (q64 - qh.double() - ql.double()).norm(dim=1)
        e0 = (q64.norm(dim=1) * shadow.eps + rest * shadow.vmax
              + q64.shape[1] * _U32 * (qh.double().norm(dim=1) + ql.double().norm(dim=1)) * shadow.vmax)
        err = e0[:, None] + _OUT_BF16 * (s[:r].abs() + s[r:].abs())
        return (mid - err).T.numpy(), (mid + err).T.numpy()


def fp32_error(q: np.ndarray, vmax: float) -> float:
    """Upper bound of the rounding error of an fp32 inner product of a row of ``q`` with a vector of
    norm <= ``vmax`` (D products and sums, any order; 1% margin)."""
    q64 = np.asarray(q, dtype=np.float64)
    return float(q64.shape[1] * _U32 * np.linalg.norm(q64, axis=1).max() * vmax * 1.01)

"""CPU inference paths and the choice of the fastest one within tolerance.

Tolerance: every descriptor within cosine >= 0.999 of eager fp32 (``tests/models/test_fast.py`` holds it on
real images). Paths:

- ``eager``: fp32, NCHW: the reference.
- ``cl``: fp32, channels_last (oneDNN's blocked convolutions avoid layout reorders).
- ``bf16``: channels_last + ``torch.autocast("cpu", bfloat16)``: convolutions and linears in bf16 on
  AVX512-BF16 / AMX, LayerNorm, softmax, normalisation in fp32 (autocast's lists); output cast back to fp32.

``auto`` picks per model from :data:`BEST_PATH` (measured by ``benchmarks/encode.py``) and falls back to
``cl`` when the CPU has no native bf16 (bf16 emulated on AVX2 is slower than fp32).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

PATHS = ("eager", "cl", "bf16")
# Fastest path within tolerance per model, from benchmarks/encode.py on the dev machine (AMD EPYC, AVX512-BF16).
BEST_PATH = {"earthloc": "bf16", "lite0-gem": "cl", "lite0-mixvpr": "cl"}


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when oneDNN runs bf16 natively here (AVX512-BF16 or AMX); False on older CPUs."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_path(model: nn.Module, path: str = "auto") -> str:
    """The concrete path for ``model``: ``auto`` -> :data:`BEST_PATH`, bf16 -> cl without native bf16."""
    if path == "auto":
        path = BEST_PATH.get(getattr(model, "name", ""), "cl")
    if path not in PATHS:
        raise ValueError(f"unknown inference path {path!r}; known: auto, {', '.join(PATHS)}")
    if path == "bf16" and not bf16_supported():
        path = "cl"
    return path


def make_runner(model: nn.Module, path: str = "auto") -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Return (path used, fn) where fn maps a normalised float batch [B,3,S,S] to fp32 descriptors [B,D].

    Works on an eval-mode copy for the non-eager paths, so the caller's model (maybe training, maybe NCHW)
    is left untouched.
    """
    path = resolve_path(model, path)
    if path == "eager":
        net = model if not model.training else copy.deepcopy(model).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            return net(x.contiguous()).float()

        return path, run
    net = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    bf16 = path == "bf16"

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        # re-normalise in fp32: the final L2 norm may have run in bf16
        return torch.nn.functional.normalize(y.float(), p=2, dim=-1)

    return path, run

"""CPU inference paths and the choice of the fastest one within tolerance.

Tolerance: every descriptor within cosine >= 0.999 of eager fp32 (``tests/models/test_encode.py`` holds it
on real images). Paths:

- ``eager``: PyTorch fp32, NCHW: the reference.
- ``cl``: PyTorch fp32, channels_last (oneDNN's blocked convolutions, fewer layout reorders).
- ``bf16``: channels_last + ``torch.autocast("cpu", bfloat16)``: convolutions and linears in bf16 on
  AVX512-BF16 / AMX; output re-normalised in fp32. Only where the CPU has native bf16.
- ``ort``: the model exported to ONNX (fp32) and run by ONNX Runtime's CPU provider (fused conv+BN+ReLU,
  its own depthwise kernels). Exact to fp32 rounding. The export takes seconds; sessions are kept in memory
  keyed by a digest of the weights actually in the model (a fine-tuned model never reuses a stale graph),
  and graphs of weights loaded from files are cached under ``<cache_dir>/onnx/``.

``auto`` picks per model from :data:`BEST_PATH` (measured by ``benchmarks/encode.py``), and falls back to
``bf16``/``cl`` when ONNX Runtime or the export fails, and from ``bf16`` to ``cl`` without native bf16 (bf16
emulated on AVX2 is slower than fp32).
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earthloc.atomic import atomic_path
from earthloc.config import cache_dir

log = logging.getLogger(__name__)

PATHS = ("eager", "cl", "bf16", "ort")
# Fastest path within tolerance per model, from benchmarks/encode.py on the dev machine (AMD EPYC, AVX512-BF16,
# 2 cores). bf16 fails the tolerance on lite0 (ReLU6 depthwise stacks drift: min cosine ~0.997).
BEST_PATH = {"earthloc": "ort", "lite0-gem": "ort", "lite0-mixvpr": "ort"}
Runner = Callable[[torch.Tensor], torch.Tensor]


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when oneDNN runs bf16 natively here (AVX512-BF16 or AMX); False on older CPUs."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_path(model: nn.Module, path: str = "auto") -> str:
    """The concrete path for ``model``: ``auto`` -> :data:`BEST_PATH`; bf16 -> cl without native bf16;
    ort -> bf16/cl without onnxruntime."""
    if path == "auto":
        path = BEST_PATH.get(getattr(model, "name", ""), "cl")
    if path not in PATHS:
        raise ValueError(f"unknown inference path {path!r}; known: auto, {', '.join(PATHS)}")
    if path == "ort" and not ort_available():
        path = "bf16"
    if path == "bf16" and not bf16_supported():
        path = "cl"
    return path


def weights_digest(model: nn.Module) -> str:
    """sha256 over the names, shapes and bytes of the model's state_dict (what the weights really are now)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _export_onnx(model: nn.Module, size: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(model, torch.zeros(1, 3, size, size), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def onnx_bytes(model: nn.Module, digest: str | None = None) -> bytes:
    """The model's ONNX graph (fp32, dynamic batch). Cached on disk only for weights exactly as loaded from a
    file (``model.loaded_digest``, set by the registry), so random or fine-tuned weights never pile up there."""
    digest = digest or weights_digest(model)
    size = int(getattr(model, "image_size", 320))
    cacheable = getattr(model, "loaded_digest", None) == digest
    path = cache_dir() / "onnx" / f"{getattr(model, 'name', 'model')}-{size}-{digest[:20]}.onnx"
    if cacheable and path.is_file():
        return path.read_bytes()
    data = _export_onnx(copy.deepcopy(model).eval().float(), size)
    if cacheable:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            tmp.chmod(0o644)
    return data


_SESSIONS: dict[tuple[str, int], object] = {}


def _ort_session(model: nn.Module):
    """An ONNX Runtime session for the model's current weights (kept in memory for the last few models)."""
    import onnxruntime as ort

    key = (weights_digest(model), torch.get_num_threads())
    if key not in _SESSIONS:
        so = ort.SessionOptions()
        so.intra_op_num_threads = key[1]
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if len(_SESSIONS) >= 3:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = ort.InferenceSession(onnx_bytes(model, key[0]), so, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def _ort_runner(model: nn.Module) -> Runner:
    sess = _ort_session(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        y = sess.run(None, {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return F.normalize(torch.from_numpy(y), p=2, dim=-1)

    return run


def _torch_runner(model: nn.Module, path: str) -> Runner:
    if path == "eager":
        net = model if not model.training else copy.deepcopy(model).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            return net(x.contiguous()).float()

        return run
    net = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    bf16 = path == "bf16"

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        return F.normalize(y.float(), p=2, dim=-1)  # the final L2 norm may have run in bf16

    return run


# Below this many images, exporting a graph that is not cached yet costs more than it saves.
ORT_MIN_WORKLOAD = 24


def _ort_ready(model: nn.Module) -> bool:
    """True when an ONNX Runtime session or cached graph for the model's current weights exists."""
    digest = weights_digest(model)
    if (digest, torch.get_num_threads()) in _SESSIONS:
        return True
    size = int(getattr(model, "image_size", 320))
    return (getattr(model, "loaded_digest", None) == digest
            and (cache_dir() / "onnx" / f"{getattr(model, 'name', 'model')}-{size}-{digest[:20]}.onnx").is_file())


def _torch_fallback(model: nn.Module) -> str:
    """The fastest PyTorch path within tolerance: bf16 passes it only on the official architecture."""
    return "bf16" if bf16_supported() and getattr(model, "name", "") == "earthloc" else "cl"


def make_runner(model: nn.Module, path: str = "auto", workload: int | None = None) -> tuple[str, Runner]:
    """Return (path used, fn) where fn maps a normalised float batch [B,3,S,S] to fp32 descriptors [B,D].

    ``workload``: number of images to encode; with ``auto``, small jobs skip a not-yet-cached ONNX export.
    Non-eager paths work on an eval-mode copy (or an exported graph), so the caller's model (maybe in
    training mode, maybe NCHW) is left untouched.
    """
    auto = path == "auto"
    path = resolve_path(model, path)
    if path == "ort" and auto and workload is not None and workload < ORT_MIN_WORKLOAD and not _ort_ready(model):
        path = _torch_fallback(model)
    if path == "ort":
        try:
            return path, _ort_runner(model)
        except Exception as err:  # noqa: BLE001 - any exporter/runtime failure: fall back to PyTorch
            log.warning("ONNX Runtime path unavailable for %s (%s); using PyTorch", getattr(model, "name", "?"), err)
            path = _torch_fallback(model)
    return path, _torch_runner(model, path)

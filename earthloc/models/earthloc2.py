"""The EarthLoc2 architecture: DINOv2-B/14 with 4 registers (timm) + SALAD, 3072-d, L2-normalised.

Released by pawelpiwowarski/EarthLoc2 (MIT; weights on Hugging Face, ``pawlo2013/EarthLoc2``). The backbone is
timm's ``vit_base_patch14_reg4_dinov2`` built with ``pretrained=False`` (architecture only: nothing is
downloaded; the released checkpoint holds the trained weights), ``num_classes=0`` and ``img_size=518``.
State-dict keys equal the released checkpoint (``backbone.*``, ``aggregator.*``; 188 entries, 88,337,761
parameters; ``shared/data/models/earthloc2_state_dict_schema.json``).

Shapes at 518 px: [B, 3, 518, 518] -> tokens [B, 1 + 4 + 1369, 768] (class, 4 registers, 37 x 37 patches
row-major) -> patch map [B, 768, 37, 37] and class token [B, 768] -> SALAD -> [B, 3072].
"""

from __future__ import annotations

from typing import cast

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from earthloc.errors import InputError
from earthloc.models.base import DescriptorModel
from earthloc.models.preprocess import Preprocessing
from earthloc.models.salad import SALAD

TIMM_ARCH = "vit_base_patch14_reg4_dinov2"
IMAGE_SIZE = 518
PATCH = 14
DESCRIPTOR_DIM = 3072
NUM_PARAMETERS = 88_337_761


class EarthLoc2Net(DescriptorModel):
    """[B, 3, S, S] ImageNet-normalised -> [B, 3072] L2-normalised; S = 518 for the released weights.

    ``image_size``: another multiple of 14 builds the same network for that input (only the positional
    embedding's length changes), which the released weights do not fit; it exists for fast plumbing tests.
    """

    def __init__(self, image_size: int = IMAGE_SIZE):
        super().__init__()
        if image_size % PATCH:
            raise InputError("image_size", f"must be a multiple of the {PATCH}-px patch, got {image_size}")
        self.backbone = cast(VisionTransformer, timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0,
                                                                  img_size=image_size))
        self.aggregator = SALAD(num_channels=self.backbone.embed_dim)
        self.name = "earthloc2"
        self.descriptor_dim = self.aggregator.out_dim
        self.preprocessing = Preprocessing(size=image_size)  # ImageNet mean/std, bilinear squash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,518,518] normalised images -> [B,3072] L2-normalised descriptors (ViT tokens -> SALAD)."""
        tokens = self.backbone.forward_features(x)  # [B, prefix + N, C], final LayerNorm applied
        side = x.shape[-1] // PATCH
        patches = tokens[:, self.backbone.num_prefix_tokens:]  # [B, N, C]
        patches = patches.reshape(x.shape[0], side, side, -1).permute(0, 3, 1, 2)  # [B, C, side, side]
        return self.aggregator(patches, tokens[:, 0])


def is_earthloc2_state(state: dict[str, torch.Tensor]) -> bool:
    """True when a state_dict looks like EarthLoc2's (a ViT with registers + a SALAD dustbin)."""
    return "backbone.reg_token" in state and "aggregator.dust_bin" in state


def describe_state(state: dict[str, torch.Tensor]) -> str:
    """A short guess at what model a foreign state_dict belongs to (for error messages)."""
    keys = list(state)
    official = any(k.startswith("backbone.model.layer") for k in keys)
    torchgeo = "fc.weight" in state and any(k.startswith("aggregator.mix.") for k in keys)  # backbone.* naming
    if official or torchgeo:
        return "the official EarthLoc model (ResNet-50 + MixVPR)"
    if any(k.startswith("trunk.net.") for k in keys):
        return "an EfficientNet-Lite0 model (lite0-*)"
    if any(k.startswith("blocks.") for k in keys) and not any(k.startswith("backbone.") for k in keys):
        return "a bare ViT backbone without the SALAD aggregator"
    n = sum(v.numel() for v in state.values())
    return f"an unknown model ({len(state)} entries, {n:,} parameters)"


def check_is_earthloc2(state: dict[str, torch.Tensor], where: object) -> None:
    """Refuse a checkpoint of another model with one line saying what it seems to be."""
    if not is_earthloc2_state(state):
        raise InputError(where, f"not an EarthLoc2 checkpoint: it looks like {describe_state(state)} "
                                "(expected backbone.reg_token and aggregator.dust_bin, 188 entries)")

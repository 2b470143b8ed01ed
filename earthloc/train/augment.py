"""Year-wise augmentation (EarthLoc recipe, facts section 4).

A training batch is ``Y`` year slots x ``B`` regions. The random parameters of one augmentation are drawn
ONCE per year slot and applied to every region of that slot, so the ``Y`` images of one region get ``Y``
different transforms, while all regions of one slot share theirs. Why: the loss compares regions within
a slot too, and a shared transform makes those negatives differ by content, not by augmentation.

Pipeline (official values, for an input resized to ``in_size`` = 800 px):
RandomRotation(45) -> RandomCrop(700) -> perspective(distortion 0.5), then crop the largest square inside
the warped quad -> Resize(out_size = 320) -> ColorJitter(0.9, 0.9, 0.9, 0) -> Normalize(ImageNet).
Sizes scale with ``in_size`` (crop = 7/8 of it) so the recipe can run smaller on CPU.

All ops are ``torchvision.transforms.v2.functional`` calls on a whole ``[B, 3, H, W]`` slot tensor: one call
per op per slot, which is what makes the parameters shared by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from earthloc.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

ROTATION_DEG = 45.0
CROP_FRACTION = 700 / 800
DISTORTION = 0.5
JITTER = 0.9  # brightness, contrast and saturation factors drawn in [1 - 0.9, 1 + 0.9]; hue 0


@dataclass(frozen=True)
class AugParams:
    """One draw of the augmentation, for images of ``in_size`` px (all pixel values in that frame).

    ``crop`` = (top, left, size) of the random crop; ``startpoints``/``endpoints`` = the perspective's
    4 corner moves (x, y) in the cropped frame, order TL, TR, BR, BL; ``square`` = (top, left, size)
    of the largest axis-aligned square inside the warped quad; ``jitter_order`` = order in which
    brightness (0), contrast (1), saturation (2) are applied.
    """

    angle: float
    crop: tuple[int, int, int]
    startpoints: tuple[tuple[int, int], ...]
    endpoints: tuple[tuple[int, int], ...]
    square: tuple[int, int, int]
    brightness: float
    contrast: float
    saturation: float
    jitter_order: tuple[int, int, int]


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def _randint(gen: torch.Generator, lo: int, hi_inclusive: int) -> int:
    return int(torch.randint(lo, hi_inclusive + 1, (), generator=gen))


def draw_params(gen: torch.Generator, in_size: int) -> AugParams:
    """Draw one set of augmentation parameters for square images of ``in_size`` px."""
    angle = _uniform(gen, -ROTATION_DEG, ROTATION_DEG)
    c = round(in_size * CROP_FRACTION)
    top, left = _randint(gen, 0, in_size - c), _randint(gen, 0, in_size - c)
    # Perspective: each corner moves inwards by up to DISTORTION x half the side, within its own quadrant.
    d = int(DISTORTION * (c // 2))
    tl = (_randint(gen, 0, d), _randint(gen, 0, d))
    tr = (c - 1 - _randint(gen, 0, d), _randint(gen, 0, d))
    br = (c - 1 - _randint(gen, 0, d), c - 1 - _randint(gen, 0, d))
    bl = (_randint(gen, 0, d), c - 1 - _randint(gen, 0, d))
    start = ((0, 0), (c - 1, 0), (c - 1, c - 1), (0, c - 1))
    end = (tl, tr, br, bl)
    # The warped quad is convex with each corner in its own quadrant, so this rectangle lies inside it:
    # left of it is every point of the left edge, right of it every point of the right edge, etc.
    x0, x1 = max(tl[0], bl[0]), min(tr[0], br[0])
    y0, y1 = max(tl[1], tr[1]), min(bl[1], br[1])
    side = max(1, min(x1 - x0, y1 - y0))
    sq = (y0 + (y1 - y0 - side) // 2, x0 + (x1 - x0 - side) // 2, side)
    b, ct, s = (_uniform(gen, 1 - JITTER, 1 + JITTER) for _ in range(3))
    i, j, k = (int(v) for v in torch.randperm(3, generator=gen))
    order = (i, j, k)
    return AugParams(angle, (top, left, c), start, end, sq, b, ct, s, order)


def apply_params(x: torch.Tensor, p: AugParams, out_size: int,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Apply one draw to a whole slot: uint8 or [0,1] float ``[B, 3, in, in]`` -> normalised float ``[B, 3, out, out]``."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = F.rotate(x, p.angle, interpolation=InterpolationMode.BILINEAR)
    x = F.crop(x, *p.crop[:2], p.crop[2], p.crop[2])
    x = F.perspective(x, [list(q) for q in p.startpoints], [list(q) for q in p.endpoints],
                      interpolation=InterpolationMode.BILINEAR)
    x = F.crop(x, p.square[0], p.square[1], p.square[2], p.square[2])
    x = F.resize(x, [out_size, out_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    ops = (lambda t: F.adjust_brightness(t, p.brightness), lambda t: F.adjust_contrast(t, p.contrast),
           lambda t: F.adjust_saturation(t, p.saturation))
    for i in p.jitter_order:
        x = ops[i](x)
    return F.normalize(x.clamp_(0.0, 1.0), list(mean), list(std))


def plain(x: torch.Tensor, out_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """No augmentation: resize + normalise only (used with ``--no-augment`` and for encoding)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = F.resize(x, [out_size, out_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.normalize(x, list(mean), list(std))


class YearwiseAugment:
    """Augment a batch ``[Y, B, 3, in, in]`` (uint8) into ``[Y, B, 3, out, out]`` (normalised float).

    ``yearwise=True``: one parameter draw per year slot (the EarthLoc trick); ``False``: one draw per image
    (the ablation); ``enabled=False``: resize + normalise only. ``last_params`` keeps the draws of the
    last call (``[Y]`` or ``[Y][B]``) for inspection.
    """

    def __init__(self, out_size: int, yearwise: bool = True, enabled: bool = True, seed: int = 0,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.out_size, self.yearwise, self.enabled = out_size, yearwise, enabled
        self.mean, self.std = mean, std
        self.gen = torch.Generator().manual_seed(seed)
        self.last_params: list = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Augment uint8 ``[Y, B, 3, in, in]`` into normalised float ``[Y, B, 3, out, out]``."""
        y, b, _, h, w = batch.shape
        if h != w:
            raise ValueError(f"square images expected, got {h}x{w}")
        if not self.enabled:
            self.last_params = []
            return plain(batch.flatten(0, 1), self.out_size, self.mean, self.std).unflatten(0, (y, b))
        out = []
        if self.yearwise:
            self.last_params = [draw_params(self.gen, h) for _ in range(y)]
            for slot, p in zip(batch, self.last_params):
                out.append(apply_params(slot, p, self.out_size, self.mean, self.std))
        else:
            self.last_params = [[draw_params(self.gen, h) for _ in range(b)] for _ in range(y)]
            for slot, ps in zip(batch, self.last_params):
                out.append(torch.cat([apply_params(img[None], p, self.out_size, self.mean, self.std)
                                      for img, p in zip(slot, ps)]))
        return torch.stack(out)

    def state_dict(self) -> dict:
        """The random generator's state (to resume a run with the same draws)."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random generator's state from :meth:`state_dict`."""
        self.gen.set_state(state["gen"])

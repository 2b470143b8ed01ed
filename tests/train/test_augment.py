"""Year-wise augmentation: one parameter draw per year slot, shared by its regions, different across slots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import Polygon, box

from earthloc.train.augment import YearwiseAugment, apply_params, draw_params

IN, OUT = 192, 96


@pytest.fixture(scope="module")
def contexts(shared_data) -> torch.Tensor:
    """4 real Sentinel-2 context images as uint8 [4, 3, IN, IN]."""
    files = sorted((shared_data / "iss_mini" / "contexts").glob("*.jpg"))[:4]
    imgs = [np.array(Image.open(f).convert("RGB").resize((IN, IN))) for f in files]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def test_same_image_in_one_slot_gets_the_same_transform(contexts):
    # Slot y holds [img0, img0, img1, img2]: with year-wise draws the two copies come out identical.
    slot = torch.stack([contexts[0], contexts[0], contexts[1], contexts[2]])
    batch = torch.stack([slot, slot, slot])
    out = YearwiseAugment(OUT, yearwise=True, seed=1)(batch)
    assert out.shape == (3, 4, 3, OUT, OUT)
    for y in range(3):
        assert torch.equal(out[y, 0], out[y, 1])
    # The ablation (a draw per image) transforms the two copies differently.
    per_image = YearwiseAugment(OUT, yearwise=False, seed=1)(batch)
    assert (per_image[0, 0] - per_image[0, 1]).abs().mean() > 0.05


def test_slot_params_are_applied_to_every_region_of_the_slot(contexts):
    batch = torch.stack([contexts, contexts.flip(0)])
    aug = YearwiseAugment(OUT, seed=3)
    out = aug(batch)
    assert len(aug.last_params) == 2
    for y in range(2):
        for b in range(4):
            alone = apply_params(batch[y, b][None], aug.last_params[y], OUT)[0]
            assert torch.allclose(alone, out[y, b], atol=1e-5)


def test_slots_differ(contexts):
    # The same region in 4 slots: 4 different draws, hence 4 different images.
    batch = contexts[:1].expand(4, 1, 3, IN, IN).contiguous()
    aug = YearwiseAugment(OUT, seed=5)
    out = aug(batch)
    angles = [p.angle for p in aug.last_params]
    assert len(set(angles)) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert (out[i, 0] - out[j, 0]).abs().mean() > 0.05


def test_square_crop_lies_inside_the_warped_quad():
    # Independent check with shapely: the square kept after the perspective warp is inside the quad.
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        p = draw_params(gen, 800)
        assert p.crop[2] == 700 and abs(p.angle) <= 45
        assert all(1 - 0.9 <= f <= 1 + 0.9 for f in (p.brightness, p.contrast, p.saturation))
        top, left, side = p.square
        assert side > 700 * 0.4
        assert Polygon(p.endpoints).buffer(1e-9).contains(box(left, top, left + side, top + side))


def test_no_fill_pixels_without_rotation():
    # A white image, no rotation, no jitter: every output pixel must come from the image (no black fill).
    gen = torch.Generator().manual_seed(7)
    white = torch.full((1, 3, IN, IN), 255, dtype=torch.uint8)
    for _ in range(20):
        p = dataclasses.replace(draw_params(gen, IN), angle=0.0, brightness=1.0, contrast=1.0, saturation=1.0)
        out = apply_params(white, p, OUT, mean=(0, 0, 0), std=(1, 1, 1))
        assert out.min() > 0.98

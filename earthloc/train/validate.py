"""Validation on held-out multi-year regions: cross-year, rotation-agnostic tile retrieval.

For every held-out region with at least two years, the *query* is its image in one other year (seeded
pick), rotated by a seeded random angle in [0, 360) and centre-cropped to the largest square that holds no
fill pixels, like a photo with no "up". The *database* is the reference (latest) image of every held-out
region, each encoded at 0/90/180/270 degrees as in the official evaluation. Exact inner-product kNN on
L2-normalised descriptors (= exact L2 kNN). ``R@N``: a hit = the query's own tile; ``oR@N``: a hit = any DB
tile whose box overlaps the query's strictly (another zoom or a 50% neighbour: the official positives are
the DB tiles a footprint overlaps, and the neutral-aware loss does not push such pairs apart). Share of
queries with a hit in the first N (``earthloc.eval.protocol.recall_at``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from earthloc.eval.protocol import recall_at
from earthloc.train.augment import plain
from earthloc.train.data import ImageCache, TrainRegion
from earthloc.train.loss import neutral_mask

DB_ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class ValSet:
    """``regions`` = the held-out regions (DB = their latest image); ``queries`` = (region index, image
    index, rotation in degrees) for every region with 2+ years."""

    regions: tuple[TrainRegion, ...]
    queries: tuple[tuple[int, int, float], ...]


def make_valset(regions: Sequence[TrainRegion], seed: int = 0, rotate: bool = True) -> ValSet:
    """Seeded queries over ``regions`` (regions with one year serve as DB distractors only)."""
    rng = np.random.default_rng(seed)
    queries = []
    for i, r in enumerate(regions):
        if len(r.images) < 2:
            continue
        k = int(rng.integers(len(r.images) - 1))  # any year but the latest (the DB one)
        angle = float(rng.uniform(0, 360)) if rotate else 0.0
        queries.append((i, k, angle))
    return ValSet(tuple(regions), tuple(queries))


def rotate_crop(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate ``[B,3,S,S]`` counter-clockwise by ``angle`` degrees and keep the central square free of fill."""
    s = x.shape[-1]
    a = math.radians(angle % 90)
    side = int(s / (math.cos(a) + math.sin(a)))  # largest axis-aligned square inside the rotated square
    x = F.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    return F.center_crop(x, [side, side])


@torch.no_grad()
def _encode(model, batches, size, mean, std, device) -> np.ndarray:
    out = [model(plain(x, size, mean, std).to(device)).float().cpu() for x in batches]
    return torch.cat(out).numpy()


@torch.no_grad()
def evaluate(model: torch.nn.Module, vs: ValSet, cache: ImageCache, size: int, mean, std,
             device: str = "cpu", ns: Sequence[int] = (1, 5, 10, 20), batch_size: int = 32) -> dict[str, float]:
    """``{"R@N": same-tile recall, "oR@N": overlap recall}`` (percent) of the held-out queries. The model
    is put in eval mode and restored afterwards."""
    was_training = model.training
    model.eval()
    db_imgs = [cache.get(r.images[-1][1]) for r in vs.regions]
    db_batches = []
    for rot in DB_ROTATIONS:  # torch.rot90 with k>0 turns counter-clockwise, like torchvision rotate
        for s in range(0, len(db_imgs), batch_size):
            db_batches.append(torch.rot90(torch.stack(db_imgs[s:s + batch_size]), rot // 90, dims=(-2, -1)))
    db = _encode(model, db_batches, size, mean, std, device)  # [4N, D], rotation-major
    tile_of_row = np.tile(np.arange(len(vs.regions)), len(DB_ROTATIONS))
    q_batches = []
    for s in range(0, len(vs.queries), batch_size):
        chunk = vs.queries[s:s + batch_size]
        q = [F.resize(rotate_crop(cache.get(vs.regions[i].images[k][1])[None].float(), ang),
                      [cache.size, cache.size], antialias=True) for i, k, ang in chunk]
        q_batches.append(torch.cat(q).clamp(0, 255).round().to(torch.uint8))
    qd = _encode(model, q_batches, size, mean, std, device)
    model.train(was_training)
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    k = min(max(ns), len(db))
    _, nn = index.search(np.ascontiguousarray(qd, dtype=np.float32), k)
    truth = np.array([i for i, _, _ in vs.queries])
    ns = tuple(n for n in ns if n <= k)
    same = recall_at(tile_of_row[nn] == truth[:, None], ns)
    overlap = neutral_mask([r.tile for r in vs.regions])  # diagonal True: the own tile counts too
    near = recall_at(overlap[truth[:, None], tile_of_row[nn]], ns)
    return {f"R@{n}": float(same[n]) for n in ns} | {f"oR@{n}": float(near[n]) for n in ns}

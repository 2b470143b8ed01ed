"""Training data over multi-year DB folders, and clustered batches.

A *region* is one DB tile (``ZZ_RRRR_CCCC``) of one DB folder with all its years. The positives of a
region are its images in other years (EarthLoc's label = region slot). A region with a single year (an
iss_mini-context DB, say) is marked ``aug_only``: its year slots all hold the same image and its positives
come from the year-wise augmentation alone.

Clustered batches: every ``refresh`` epochs the loop encodes one reference image per region with the
current model; faiss k-means groups the descriptors and each step draws all its regions from one cluster,
picked uniformly, so the negatives of a batch look alike (hard negatives by construction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from earthloc.db import manifest as db_manifest
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.models.preprocess import load_image
from earthloc.train.augment import plain


@dataclass(frozen=True)
class TrainRegion:
    """One place of one DB folder: ``images`` = ((year, absolute path), ...) sorted by year."""

    tile: TileBlock
    images: tuple[tuple[int, Path], ...]
    source: str

    @property
    def aug_only(self) -> bool:
        """True for a single-year region: positives come from augmentation only."""
        return len(self.images) == 1

    @property
    def years(self) -> tuple[int, ...]:
        """Years of the region's DB images, in slot order."""
        return tuple(y for y, _ in self.images)


def load_regions(db_dirs: Sequence[Path], min_years: int = 1) -> list[TrainRegion]:
    """All regions of the DB folders (via each folder's manifest), in a stable order.

    ``min_years``: drop regions with fewer years (2 = multi-year only). Raises InputError for an empty result.
    """
    regions: list[TrainRegion] = []
    for db in db_dirs:
        db = Path(db)
        frame = db_manifest.load(db)
        for name, group in frame.sort_values(["tile", "year"]).groupby("tile", sort=True):
            group = group.drop_duplicates("year")
            if len(group) < min_years:
                continue
            images = tuple((int(y), db / p) for y, p in zip(group["year"], group["path"]))
            regions.append(TrainRegion(TileBlock.from_name(str(name)), images, db.name))
    if not regions:
        raise InputError(", ".join(map(str, db_dirs)), f"no DB region with at least {min_years} year(s)")
    return regions


class ImageCache:
    """DB images decoded once and kept as uint8 ``[3, size, size]`` tensors (a 256-px image is 192 KB)."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[Path, torch.Tensor] = {}

    def get(self, path: Path) -> torch.Tensor:
        """The image at ``path`` as uint8 ``[3, size, size]`` (decoded and resized once, then cached)."""
        t = self._cache.get(path)
        if t is None:
            img = load_image(path).resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=None)
            t = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
            self._cache[path] = t
        return t


def pick_years(region: TrainRegion, n_slots: int, rng: np.random.Generator) -> list[int]:
    """Indices into ``region.images`` for the ``n_slots`` year slots.

    Distinct years when the region has enough, else every year once plus random repeats (a repeat lands
    in another slot, hence gets another augmentation). A single-year region fills every slot with its one image.
    """
    n = len(region.images)
    if n >= n_slots:
        return list(rng.choice(n, n_slots, replace=False))
    extra = list(rng.choice(n, n_slots - n, replace=True))
    return list(rng.permutation(list(range(n)) + extra))


def make_batch(regions: Sequence[TrainRegion], ids: Sequence[int] | np.ndarray, n_slots: int, cache: ImageCache,
               rng: np.random.Generator) -> torch.Tensor:
    """uint8 images ``[n_slots, len(ids), 3, S, S]``: slot y holds one year of each region."""
    out = torch.empty((n_slots, len(ids), 3, cache.size, cache.size), dtype=torch.uint8)
    for b, i in enumerate(ids):
        for y, k in enumerate(pick_years(regions[i], n_slots, rng)):
            out[y, b] = cache.get(regions[i].images[k][1])
    return out


class ClusterBatches:
    """Which regions go together in a batch: one cluster per step (or uniform sampling when off).

    ``assignment`` [N] int: cluster of each region. Starts random (as the official first epochs); call
    :meth:`fit` with fresh descriptors to re-cluster with faiss k-means.
    """

    def __init__(self, n_regions: int, batch_regions: int, n_clusters: int | None = None,
                 clustered: bool = True, seed: int = 0):
        if n_regions < 2:
            raise InputError("training data", f"needs at least 2 regions, got {n_regions}")
        self.n, self.batch, self.clustered = n_regions, min(batch_regions, n_regions), clustered
        # Default: clusters about 4 batches large, so a batch is a sample of a cluster, not all of it.
        self.k = n_clusters or int(np.clip(n_regions // (4 * self.batch), 1, 50))
        self.seed = seed
        self.assignment = np.random.default_rng(seed).integers(0, self.k, n_regions)

    def fit(self, desc: np.ndarray, niter: int = 100) -> None:
        """k-means (faiss) on ``desc`` [N, D] float32, then assign every region to its nearest centroid."""
        desc = np.ascontiguousarray(desc, dtype=np.float32)
        km = faiss.Kmeans(desc.shape[1], self.k, niter=niter, seed=self.seed, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=10**6)
        km.train(desc)
        _, assign = km.index.search(desc, 1)
        self.assignment = assign[:, 0].astype(np.int64)

    def clusters(self) -> list[np.ndarray]:
        """Region ids of every cluster with at least 2 regions (a batch needs a negative)."""
        groups = [np.flatnonzero(self.assignment == c) for c in range(self.k)]
        return [g for g in groups if len(g) >= 2]

    def next_batch(self, rng: np.random.Generator) -> np.ndarray:
        """Region ids of one batch: up to ``batch`` distinct regions of one uniformly picked cluster."""
        if not self.clustered:
            return rng.choice(self.n, self.batch, replace=False)
        groups = self.clusters()
        if not groups:  # degenerate clustering (every region alone): fall back to uniform sampling
            return rng.choice(self.n, self.batch, replace=False)
        g = groups[int(rng.integers(len(groups)))]
        return rng.choice(g, min(self.batch, len(g)), replace=False)


@torch.no_grad()
def encode_regions(model: torch.nn.Module, regions: Sequence[TrainRegion], cache: ImageCache, size: int,
                   mean, std, batch_size: int = 32, device: str = "cpu", year_index: int = -1,
                   deadline: float | None = None, progress: bool = False) -> np.ndarray | None:
    """Descriptors ``[N, D]`` float32 of one image per region (default its latest year), no augmentation.

    ``deadline``: a :func:`time.perf_counter` value; past it the encode stops and returns None (a
    training time budget bounds the clustering encode too).
    """

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for s in tqdm(range(0, len(regions), batch_size), desc="clustering: encode", unit="batch",
                          disable=not progress):
                if deadline is not None and time.perf_counter() > deadline:
                    return None
                x = torch.stack([cache.get(r.images[year_index][1]) for r in regions[s:s + batch_size]])
                out.append(model(plain(x, size, mean, std).to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()

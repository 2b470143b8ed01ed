"""Batched descriptor extraction: images -> L2-normalised descriptors [N, R, D], R = rotations.

Images are read and resized in DataLoader workers (uint8, so little goes through the worker pipes); the main
process rotates, normalises and runs the model on the fastest path within tolerance (:mod:`fast`).
Rotation ``r`` = the image rotated counter-clockwise by ``r`` degrees (torchvision ``rotate(img, r)``
convention), done exactly with ``torch.rot90`` on the resized square.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from earthloc.errors import InputError
from earthloc.models.fast import make_runner, resolve_device
from earthloc.models.preprocess import Preprocessing, load_image, normalize, to_uint8_tensor

Item = str | os.PathLike | Image.Image


class _ImageDataset(Dataset):
    """items[i] -> (i, uint8 [3,S,S] or None, error (where, problem) or None). Errors travel as values
    because DataLoader workers cannot re-raise an InputError with its two arguments."""

    def __init__(self, items: Sequence[Item], prep: Preprocessing):
        self.items, self.prep = items, prep

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            img = item if isinstance(item, Image.Image) else load_image(item)
            return i, to_uint8_tensor(img, self.prep.size, self.prep.interpolation), None
        except InputError as err:
            return i, None, (err.where, err.problem)


def _collate(batch: list) -> list:
    return batch


def rotate_ccw(x: torch.Tensor, degrees: int) -> torch.Tensor:
    """Rotate [..., H, W] counter-clockwise by a multiple of 90 degrees (exact, no resampling)."""
    if degrees % 90:
        raise InputError(degrees, "rotation must be a multiple of 90 degrees")
    return torch.rot90(x, k=(degrees // 90) % 4, dims=(-2, -1))


def encode(model: torch.nn.Module, items: Sequence[Item], rotations: Sequence[int] = (0,), batch_size: int = 32,
           num_workers: int = 0, progress: bool = True, dtype: str = "float32", path: str = "auto",
           device: str = "cpu") -> np.ndarray:
    """Encode ``items`` (image paths or PIL images) at each rotation.

    Returns float32 (or float16 with ``dtype="float16"``, half the storage) array [N, R, D], each row
    L2-normalised (before the fp16 cast). ``path``: inference path (``auto`` = fastest within cosine 0.999 of
    eager fp32; ``eager`` = the fp32 reference). ``device``: ``cpu``, ``cuda[:N]`` (fp32 on the GPU) or
    ``auto``. Unreadable image -> InputError naming it.
    """
    if dtype not in ("float32", "float16"):
        raise InputError(dtype, "dtype must be float32 or float16")
    device = resolve_device(device)  # a missing GPU fails before any work
    rotations = tuple(int(r) for r in rotations)
    for r in rotations:
        if r % 90:
            raise InputError(r, "rotation must be a multiple of 90 degrees")
    prep: Preprocessing = getattr(model, "preprocessing", Preprocessing())
    dim = int(getattr(model, "descriptor_dim"))
    out = np.empty((len(items), len(rotations), dim), dtype=np.float32)
    if len(items) == 0:
        return out.astype(dtype)
    _, run = make_runner(model, path, workload=len(items) * len(rotations), device=device)
    loader = DataLoader(_ImageDataset(items, prep), batch_size=max(1, batch_size // len(rotations)),
                        num_workers=num_workers, collate_fn=_collate, persistent_workers=False)
    with torch.inference_mode(), tqdm(total=len(items), unit="img", desc=f"encode {getattr(model, 'name', '')}",
                                      disable=not progress) as bar:
        for batch in loader:
            for _, _, err in batch:
                if err is not None:
                    raise InputError(*err)
            idx = [i for i, _, _ in batch]
            x = normalize(torch.stack([t for _, t, _ in batch]), prep)  # [B,3,S,S]
            xr = torch.stack([rotate_ccw(x, r) for r in rotations], dim=1)  # [B,R,3,S,S]
            y = run(xr.flatten(0, 1))  # [B*R, D]
            out[idx] = y.view(len(idx), len(rotations), dim).numpy()
            bar.update(len(idx))
    return out if dtype == "float32" else out.astype(np.float16)

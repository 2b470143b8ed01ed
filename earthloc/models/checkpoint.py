"""Reading checkpoint files and loading them strictly, with errors that list what does not fit."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from earthloc.errors import InputError


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (1 MiB chunks)."""
    return _sha256_cached(str(Path(path).resolve()), *_stamp(path))


def _stamp(path: str | os.PathLike) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a plain state_dict saved with ``torch.save`` (tensors only: ``weights_only=True``, on CPU), or a
    ``.safetensors`` file.

    A dict wrapping it under ``"state_dict"``, ``"model"`` or ``"model_state_dict"`` (Lightning / training scripts,
    EarthLoc2's resume checkpoints) is unwrapped, and a
    ``module.`` prefix (DataParallel) is stripped. Anything unreadable -> InputError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        obj: Any
        if path.suffix == ".safetensors":  # Hugging Face's tensor-only format
            obj = safetensors.torch.load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError,
            AttributeError, KeyError, IndexError, safetensors.SafetensorError) as err:
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(path, f"not a readable PyTorch checkpoint (corrupt or truncated?): {msg}") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "checkpoint is not a state_dict (a dict of tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], where: object) -> None:
    """``model.load_state_dict(state, strict=True)`` with one InputError listing missing keys, unexpected keys
    and shape mismatches (instead of PyTorch's multi-line RuntimeError)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise InputError(where, "checkpoint does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)

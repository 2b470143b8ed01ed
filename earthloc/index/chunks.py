"""Encoding a DB folder for an index, resumably: descriptors saved per chunk of images in a
``.partial-*`` folder beside the index, reused by a rerun, removed once the index is written."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from earthloc.atomic import atomic_path
from earthloc.index.formats import RotationMode
from earthloc.index.identity import ModelIdentity, manifest_digest
from earthloc.models.encoders import Encoder


def partial_dir(out_dir: Path, manifest: pd.DataFrame, mode: RotationMode, identity: ModelIdentity) -> Path:
    """The chunk folder of one (DB, rotation mode, model) under ``out_dir``."""
    return Path(out_dir) / f".partial-{manifest_digest(manifest)[:16]}-{mode}-{identity.name}"


def encode_db(db_dir: Path, manifest: pd.DataFrame, encoder: Encoder, out_dir: Path, mode: RotationMode,
              chunk: int = 1024, progress: bool = True) -> np.ndarray:
    """Descriptors ``(N, len(mode.db_rotations), D)`` float32 of the manifest's images, in manifest
    order. Chunks of ``chunk`` images already on disk are reused; each new one is written atomically
    as soon as the encoder returns it (a Ray encoder runs several at once)."""
    partial = partial_dir(out_dir, manifest, mode, ModelIdentity.of(encoder.model))
    partial.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(manifest) + chunk - 1) // chunk
    todo = [(i, [db_dir / p for p in manifest["path"].iloc[i * chunk:(i + 1) * chunk]])
            for i in range(n_chunks) if not _chunk_file(partial, i).exists()]

    def batches() -> Iterator[list[Path]]:
        for i, paths in todo:
            if progress and n_chunks > 1:
                print(f"encoding chunk {i + 1}/{n_chunks} ({len(paths)} images)", flush=True)
            yield paths

    for (i, _), vecs in zip(todo, encoder.encode_batches(batches(), mode.db_rotations, progress=progress)):
        with atomic_path(_chunk_file(partial, i)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, vecs.astype(np.float32))
    return np.concatenate([np.load(_chunk_file(partial, i)) for i in range(n_chunks)])


def remove_chunks(out_dir: Path, manifest: pd.DataFrame, mode: RotationMode, identity: ModelIdentity) -> None:
    """Drop the chunk folder once the index that used it is written."""
    shutil.rmtree(partial_dir(out_dir, manifest, mode, identity), ignore_errors=True)


def _chunk_file(partial: Path, i: int) -> Path:
    return partial / f"chunk_{i:05d}.npy"

"""Index formats: the rotation layout (:class:`RotationMode`) and the vector precision (FAISS
flat-codes index per precision)."""

from __future__ import annotations

from enum import StrEnum

import faiss
import numpy as np

from earthloc.errors import InputError

ROTATIONS = (0, 90, 180, 270)
PRECISIONS = ("fp32", "fp16", "pq")
PQ_BITS = 8
PQ_SUBVECTOR_DIM = 8  # PQ with d/8 sub-quantizers of 8 bits: 4096-d -> 512 bytes per vector


class RotationMode(StrEnum):
    """Where the four 90-degree rotations go. ``QUERY``: each DB image stored once (rotation 0), the
    photo encoded at 0/90/180/270 (1x index); ``DB``: every DB image stored at the four rotations
    (the official, 4x larger layout), the photo encoded once."""

    QUERY = "query"
    DB = "db"

    @classmethod
    def parse(cls, value: str | RotationMode, param: str = "rotations") -> RotationMode:
        """The mode named ``value``; anything else -> :class:`InputError` naming ``param``."""
        try:
            return cls(value)
        except ValueError:
            raise InputError(param, f"must be 'query' or 'db', got {value!r}") from None

    @property
    def db_rotations(self) -> tuple[int, ...]:
        """Rotations (degrees counter-clockwise) stored per DB image."""
        return (0,) if self is RotationMode.QUERY else ROTATIONS

    @property
    def query_rotations(self) -> tuple[int, ...]:
        """Rotations a photo is encoded at."""
        return ROTATIONS if self is RotationMode.QUERY else (0,)


def new_faiss(dim: int, precision: str, train: np.ndarray) -> faiss.Index:
    """An empty FAISS flat-codes index of ``precision`` for ``dim``-d vectors (PQ trained on ``train``)."""
    if precision == "fp32":
        return faiss.IndexFlatIP(dim)
    if precision == "fp16":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    if precision == "pq":
        if dim % PQ_SUBVECTOR_DIM:
            raise InputError("precision pq", f"descriptor size {dim} is not a multiple of {PQ_SUBVECTOR_DIM}")
        if len(train) < 2**PQ_BITS:
            raise InputError("precision pq", f"PQ needs at least {2**PQ_BITS} vectors to train, got {len(train)}")
        index = faiss.IndexPQ(dim, dim // PQ_SUBVECTOR_DIM, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.min_points_per_centroid = 1  # small DBs: train anyway (>= 256 checked above), no warning per sub-quantizer
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        return index
    raise InputError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")

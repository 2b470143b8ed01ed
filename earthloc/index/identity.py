"""What ties an index to its model and its DB: the model identity and the manifest digest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from earthloc.errors import InputError


@dataclass(frozen=True)
class ModelIdentity:
    """What must match between the model that built an index and the one that queries it."""

    name: str
    checkpoint_hash: str | None
    descriptor_dim: int
    image_size: int
    preprocessing: str

    @classmethod
    def of(cls, model) -> ModelIdentity:
        """Identity of a model from :func:`earthloc.models.registry.load_model`."""
        size = int(getattr(model, "image_size", 0) or 0)
        prep: Any = getattr(model, "preprocessing", None)
        if hasattr(prep, "as_dict"):
            prep = json.dumps(prep.as_dict(), sort_keys=True)
        prep = prep or f"resize {size}x{size}, RGB, ImageNet mean/std"
        return cls(
            name=str(model.name),
            checkpoint_hash=getattr(model, "checkpoint_hash", None),
            descriptor_dim=int(model.descriptor_dim),
            image_size=size,
            preprocessing=str(prep),
        )

    def check(self, model, where: object) -> None:
        """Raise :class:`InputError` if ``model`` is not the model this index was built with."""
        other = ModelIdentity.of(model)
        for field in ("name", "checkpoint_hash", "descriptor_dim", "image_size", "preprocessing"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                raise InputError(where, f"index was built with model {self.name!r} ({field}={mine!r}), "
                                        f"not with {other.name!r} ({field}={theirs!r}); rebuild the index "
                                        "or use the same model")


def manifest_digest(manifest: pd.DataFrame) -> str:
    """sha256 over the ordered (tile, year, image sha256) of every row: identifies a manifest."""
    h = hashlib.sha256()
    for tile, year, sha in zip(manifest["tile"], manifest["year"], manifest["sha256"]):
        h.update(f"{tile}|{int(year)}|{sha}\n".encode())
    return h.hexdigest()

"""What every descriptor model carries besides its weights."""

from __future__ import annotations

from torch import nn

from earthloc.models.preprocess import Preprocessing


class DescriptorModel(nn.Module):
    """Image batch [B, 3, S, S] (normalised per ``preprocessing``) -> L2-normalised descriptors [B, D].

    Attributes set by the registry: ``name``, ``descriptor_dim`` (D), ``image_size`` (S, px),
    ``preprocessing`` (:class:`Preprocessing`), ``checkpoint_hash`` (sha256 of the weights file, or None
    for random weights), ``weights_source`` (human-readable).
    """

    name: str = "?"
    descriptor_dim: int = 0
    preprocessing: Preprocessing = Preprocessing()
    checkpoint_hash: str | None = None
    weights_source: str = "random init"
    loaded_digest: str | None = None  # fast.weights_digest of the weights as loaded from a file

    @property
    def image_size(self) -> int:
        """Input side S in pixels (images are S x S)."""
        return self.preprocessing.size

    def identity(self) -> dict:
        """What an index stores to recognise the model that built it: name, weights hash, preprocessing."""
        return {"name": self.name, "checkpoint_sha256": self.checkpoint_hash,
                "descriptor_dim": self.descriptor_dim, "preprocessing": self.preprocessing.as_dict()}

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())

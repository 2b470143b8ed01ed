"""Index stage: DB descriptors in FAISS, stored with their manifest and the identity of the model."""

from earthloc.index.store import FORMAT_VERSION, Hit, Index

__all__ = ["FORMAT_VERSION", "Hit", "Index"]

"""Settings read from the environment.

One setting tells code, tests and the demo where the real data lives: ``EARTHLOC_SHARED``
(default ``../shared`` relative to the current directory, i.e. beside the repository).
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    """The shared folder (holds ``data/`` and ``docs/``), from ``EARTHLOC_SHARED``."""
    return Path(os.environ.get("EARTHLOC_SHARED", "../shared")).expanduser().resolve()


def data_dir() -> Path:
    """``<shared>/data``: iss_mini, earthloc_meta, multiyear, orbits, models."""
    return shared_dir() / "data"


def cache_dir() -> Path:
    """Where earthloc keeps downloaded weights and tiles (``EARTHLOC_CACHE``, default ``~/.cache/earthloc``)."""
    return Path(os.environ.get("EARTHLOC_CACHE", "~/.cache/earthloc")).expanduser()

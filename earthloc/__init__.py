"""earthloc: find where on Earth an astronaut photo was taken (EarthLoc, CVPR 2024, as a tool).

The public face (the rest is reachable by module)::

    from earthloc import LocateOptions, gather_photos, localize, open_locator

``open_locator`` opens an index folder with its model; ``gather_photos`` reads photos from files,
folders and CSVs; ``localize`` runs decode -> encode -> search -> (refine) per photo, resumably.
Records: :class:`Photo`, :class:`Candidate`, :class:`Localization`; bad input raises :class:`InputError`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module; resolved on first use so that `import earthloc` (and the CLI's start-up) stays light
_EXPORTS = {
    "InputError": "earthloc.errors",
    "Photo": "earthloc.records",
    "Candidate": "earthloc.records",
    "Localization": "earthloc.records",
    "LocateOptions": "earthloc.pipeline",
    "open_locator": "earthloc.pipeline",
    "gather_photos": "earthloc.pipeline",
    "localize": "earthloc.pipeline",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'earthloc' has no attribute {name!r}")

"""Context providers: the candidate's 12x12-tile "surrounding" image and its exact tile block.

A provider is anything with ``context(candidate) -> Context | None`` (``None``: no imagery for that
candidate, so it cannot be verified). :class:`IssMiniContexts` serves the georeferenced EarthMatch
contexts of ``iss_mini``; a DB- or :class:`TileSource`-backed provider only has to paste 12x12 tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from earthloc.db.manifest import load as load_manifest
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate
from earthloc.sources.base import compose
from earthloc.sources.iss_mini import IssMini


@dataclass(frozen=True)
class Context:
    """A north-up RGB image ``(H, W, 3)`` uint8 covering exactly ``block`` (Web-Mercator pixel grid)."""

    image: np.ndarray
    block: TileBlock

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise InputError(f"context {self.block.name}", f"image must be (H, W, 3) uint8, got {self.image.shape}")


class ContextProvider(Protocol):
    """Returns the surrounding of a candidate (``candidate.tile.surrounding()``), or ``None`` if unavailable."""

    def context(self, candidate: Candidate) -> Context | None:
        """The 12x12-tile context around ``candidate``, or None when there is no imagery for it."""


class IssMiniContexts:
    """Contexts from ``iss_mini/contexts.csv``: one 12x12 block per candidate tile name (zoom-exact bounds).

    ``iss_mini_dir``: the iss_mini folder or the data folder holding it (:meth:`IssMini.open`).
    """

    def __init__(self, iss_mini_dir: Path):
        iss = IssMini.open(iss_mini_dir)
        self.root = iss.root
        self._rows = {c.candidate_tile: c for c in iss.contexts()}

    def block_of(self, tile_name: str) -> TileBlock | None:
        """The 12x12 block of the context stored for candidate ``tile_name`` (``ZZ_RRRR_CCCC``), if any."""
        r = self._rows.get(tile_name)
        return None if r is None else r.block

    def context(self, candidate: Candidate) -> Context | None:
        """The stored 12x12 context image of ``candidate``, or None when iss_mini has none for it."""
        # The CSV spells names with 4-5 digits; TileBlock.name pads to 4, the same spelling.
        block = self.block_of(candidate.tile.name)
        if block is None:
            return None
        if block != candidate.tile.surrounding():
            raise InputError(f"context {candidate.tile.name}", f"stored block {block} is not the 12x12 surrounding")
        return Context(_load_rgb(self._rows[candidate.tile.name].path), block)


CONTEXT_PX = 1536  # EarthMatch's surroundings: 12 tiles at 128 px (3072-px mosaic halved)


def _surrounding(candidate: Candidate) -> TileBlock | None:
    """The 12x12 block around the candidate, or ``None`` where it would leave the tile grid (poles, antimeridian)."""
    try:
        return candidate.tile.surrounding()
    except InputError:
        return None


class SourceContexts:
    """Contexts pasted from a :class:`~earthloc.sources.base.TileSource` (144 tiles), for ``year``
    (default: the candidate's year), resized to ``px`` square."""

    def __init__(self, source, year: int | None = None, px: int = CONTEXT_PX):
        self.source, self.year, self.px = source, year, px

    def context(self, candidate: Candidate) -> Context | None:
        """The 144 tiles around ``candidate`` pasted from the source, resized to ``px`` square; None if not served."""
        block = _surrounding(candidate)
        if block is None:
            return None
        try:
            img = compose(self.source, block, self.year or candidate.year)
        except (KeyError, ValueError, OSError):  # a source that cannot serve this place
            return None
        return Context(np.asarray(img.resize((self.px, self.px), Image.Resampling.BILINEAR)), block)


class DbContexts:
    """Contexts pasted from a DB folder: the 3x3 non-overlapping DB images around the candidate
    (offsets of 4 tiles; EarthMatch's "3x3 surrounding"). Missing ones (sea, outside the DB) stay black;
    ``None`` when none but the candidate itself is missing too."""

    def __init__(self, db_dir: Path, px: int = CONTEXT_PX):
        self.root = Path(db_dir)
        df = load_manifest(self.root)
        self._paths = {(int(z), int(r), int(c), int(y)): p
                       for z, r, c, y, p in zip(df["zoom"], df["row"], df["col"], df["year"], df["path"])}
        self.px = px

    def context(self, candidate: Candidate) -> Context | None:
        """The 3x3 DB images around ``candidate`` pasted into ``px`` square (missing ones black), or None."""
        block = _surrounding(candidate)
        if block is None:
            return None
        t, cell = candidate.tile, self.px // 3
        out = np.zeros((cell * 3, cell * 3, 3), np.uint8)
        found = 0
        for i, dr in enumerate((-4, 0, 4)):
            for j, dc in enumerate((-4, 0, 4)):
                rel = self._paths.get((t.zoom, t.row + dr, t.col + dc, candidate.year))
                if rel is None:
                    continue
                with Image.open(self.root / rel) as im:
                    im.draft("RGB", (cell, cell))  # JPEG: decode at a reduced scale directly (4x fewer pixels at 512)
                    out[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = np.asarray(
                        im.convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR))
                found += 1
        return Context(out, block) if found else None


@lru_cache(maxsize=16)
def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    arr.setflags(write=False)
    return arr

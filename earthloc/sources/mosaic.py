"""Tiles cut from local Web-Mercator mosaics, e.g. the iss_mini Sentinel-2-cloudless contexts.

A :class:`Mosaic` is an image whose pixel grid is a block of WMTS tiles: ``tiles_per_side`` tiles from
(``row0``, ``col0``) at ``zoom``, any pixel size (the iss_mini contexts are 12x12 tiles in 1536 px, i.e.
128 px per tile, or in 1024 px, ~85.3 px per tile). A requested 256-px tile is the matching pixel box,
resampled to 256 px:

- integer up-scaling (128 -> 256 px) replicates pixels (nearest), so every DB pixel is a source pixel
  and a DB image is exactly the source crop scaled 2x;
- integer down-scaling (a coarser zoom) averages whole pixel blocks (box filter);
- anything else uses bicubic (up) or Lanczos (down).

When several mosaics cover a tile the one with the most pixels per tile wins (the iss_mini contexts
agree on their overlaps at r = 1.000, so the choice only changes resolution, not content).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.tiles import TILE_PX
from earthloc.sources.base import DecodedImages


@dataclass(frozen=True)
class Mosaic:
    """One georeferenced mosaic: ``tiles_per_side``-square block of WMTS tiles at ``zoom`` from (row0, col0)."""

    path: Path
    zoom: int
    row0: int
    col0: int
    tiles_per_side: int
    width_px: int
    height_px: int
    year: int

    @property
    def px_per_tile(self) -> float:
        """Pixels per WMTS tile of this mosaic (horizontal)."""
        return self.width_px / self.tiles_per_side

    def box(self, z: int, x: int, y: int) -> tuple[float, float, float, float] | None:
        """Pixel box ``(left, top, right, bottom)`` of tile z/x/y in this mosaic, or None if not fully inside."""
        f = 2.0 ** (self.zoom - z)  # mosaic-zoom tiles per requested tile
        x0, y0 = x * f - self.col0, y * f - self.row0
        x1, y1 = x0 + f, y0 + f
        n = self.tiles_per_side
        if x0 < 0 or y0 < 0 or x1 > n or y1 > n:
            return None
        sx, sy = self.width_px / n, self.height_px / n
        return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def _resample_for(box: tuple[float, float, float, float]) -> Image.Resampling:
    """Exact filters for integer scale factors on pixel-aligned boxes, smooth ones otherwise."""
    w = box[2] - box[0]
    aligned = all(float(v).is_integer() for v in box)
    if aligned and w < TILE_PX and (TILE_PX / w).is_integer():
        return Image.Resampling.NEAREST  # pixel replication
    if aligned and w >= TILE_PX and (w / TILE_PX).is_integer():
        return Image.Resampling.BOX  # exact block average (identity when w == 256)
    return Image.Resampling.BICUBIC if w < TILE_PX else Image.Resampling.LANCZOS


class MosaicSource:
    """A :class:`~earthloc.sources.base.TileSource` over local Web-Mercator mosaics.

    >>> src = IssMini.open().source()  # earthloc.sources.iss_mini: every iss_mini context
    >>> src.tile(13, 4100, 3000, 2018)  # doctest: +SKIP
    """

    def __init__(self, mosaics: list[Mosaic], cache_images: int = 16):
        if not mosaics:
            raise InputError("MosaicSource", "no mosaics given")
        self.mosaics = tuple(mosaics)
        self._images = DecodedImages(cache_images, "mosaic image")

    @property
    def years(self) -> tuple[int, ...]:
        """Years served (sorted)."""
        return tuple(sorted({m.year for m in self.mosaics}))

    def best(self, z: int, x: int, y: int, year: int) -> tuple[Mosaic, tuple[float, float, float, float]] | None:
        """The highest-resolution mosaic fully covering tile z/x/y in ``year`` and its pixel box, or None."""
        found, best_score = None, None
        for m in self.mosaics:
            if m.year != year:
                continue
            box = m.box(z, x, y)
            if box is None:
                continue
            score = (box[2] - box[0], -abs(m.zoom - z))  # most pixels, then least resampling
            if best_score is None or score > best_score:
                found, best_score = (m, box), score
        return found

    @property
    def native_zooms(self) -> tuple[int, ...]:
        """Zooms at which mosaics exist (their tiles need no resampling beyond the pixel size)."""
        return tuple(sorted({m.zoom for m in self.mosaics}))

    def coverage(self, zoom: int, native_only: bool = False) -> list[tuple[int, int, int, int]]:
        """Tile ranges ``(row_lo, row_hi, col_lo, col_hi)`` (half-open) at ``zoom`` touched by each mosaic.

        ``native_only``: only mosaics whose own zoom is ``zoom``.
        """
        out = []
        for m in self.mosaics:
            if native_only and m.zoom != zoom:
                continue
            f = 2.0 ** (zoom - m.zoom)
            n = m.tiles_per_side
            out.append((math.floor(m.row0 * f), math.ceil((m.row0 + n) * f),
                        math.floor(m.col0 * f), math.ceil((m.col0 + n) * f)))
        return sorted(set(out))

    def covers_block(self, block, year: int) -> bool:
        """True when a single mosaic of ``year`` contains the whole block (fast path for grid listing)."""
        for m in self.mosaics:
            if m.year == year and m.box(block.zoom, block.col, block.row) is not None:
                g = 2.0 ** (m.zoom - block.zoom)
                n = m.tiles_per_side
                if (block.row + block.size) * g <= m.row0 + n and (block.col + block.size) * g <= m.col0 + n:
                    return True
        return False

    def covers(self, z: int, x: int, y: int, year: int) -> bool:
        """True when some mosaic of ``year`` fully contains tile z/x/y."""
        return self.best(z, x, y, year) is not None

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """The 256-px RGB tile z/x/y of ``year``, cut from the best mosaic (see :meth:`best`) and resampled."""
        found = self.best(z, x, y, year)
        if found is None:
            raise InputError(f"tile {z}/{x}/{y} year {year}", "not covered by any local mosaic")
        m, box = found
        return self._image(m.path).resize((TILE_PX, TILE_PX), _resample_for(box), box=box)

    def _image(self, path: Path) -> Image.Image:
        """Decoded RGB mosaic (kept in a small LRU: neighbouring tiles reuse it)."""
        return self._images.get(path)

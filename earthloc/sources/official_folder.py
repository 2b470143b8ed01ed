"""Tiles read back from an official-layout DB folder (read-only), indexed by the file names.

Useful to re-cut, subset or re-encode an official download (``database/{year}_{zz}/.../@...@.jpg``)
with ``earthloc db build --source official:DIR``. A tile (z, x, y) is cropped from a DB image that
contains it (4x4 tiles from an even row/col: two candidates per axis), so any tile of any stored image
can be served; nothing in the folder is ever written.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.names import scan_db_folder
from earthloc.geo.tiles import TILE_PX
from earthloc.sources.base import DecodedImages


class OfficialSource:
    """A :class:`~earthloc.sources.base.TileSource` over an official-layout folder (or one built by earthloc)."""

    def __init__(self, db_dir: str | Path, cache_images: int = 32):
        self.db_dir = Path(db_dir)
        if not self.db_dir.is_dir():
            raise InputError(self.db_dir, "DB folder not found")
        images = scan_db_folder(self.db_dir)
        if not images:
            raise InputError(self.db_dir, "no official DB images found under database/")
        self._paths = {(n.tile.zoom, n.tile.row, n.tile.col, int(n.year)): self.db_dir / rel for n, rel in images}
        self._years = tuple(sorted({k[3] for k in self._paths}))
        self._zooms = tuple(sorted({k[0] for k in self._paths}))
        self._images = DecodedImages(cache_images, "DB image")

    @property
    def years(self) -> tuple[int, ...]:
        """Years of the DB images found (sorted)."""
        return self._years

    @property
    def native_zooms(self) -> tuple[int, ...]:
        """Zooms of the DB images found (sorted)."""
        return self._zooms

    def coverage(self, zoom: int, native_only: bool = False) -> list[tuple[int, int, int, int]]:
        """One tile range ``(row, row+4, col, col+4)`` per stored image at ``zoom``."""
        return sorted({(r, r + 4, c, c + 4) for (z, r, c, _y) in self._paths if z == zoom})

    def _find(self, z: int, x: int, y: int, year: int) -> tuple[Path, int, int] | None:
        """A stored image containing tile z/x/y: (path, tile offset x, tile offset y) inside it."""
        for r in (y - y % 2, y - y % 2 - 2):
            for c in (x - x % 2, x - x % 2 - 2):
                p = self._paths.get((z, r, c, year))
                if p is not None:
                    return p, x - c, y - r
        return None

    def covers(self, z: int, x: int, y: int, year: int) -> bool:
        """Whether a stored DB image holds tile z/x/y of ``year``."""
        return self._find(z, x, y, year) is not None

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """The 256-px RGB tile z/x/y of ``year``, cut from the DB image that holds it."""
        found = self._find(z, x, y, year)
        if found is None:
            raise InputError(f"tile {z}/{x}/{y} year {year}", f"not in the DB folder {self.db_dir}")
        path, dx, dy = found
        img = self._image(path)
        s = img.width / 4  # pixels per tile (1024-px official images: 256)
        box = (dx * s, dy * s, (dx + 1) * s, (dy + 1) * s)
        if s == TILE_PX:
            return img.crop((int(box[0]), int(box[1]), int(box[2]), int(box[3])))
        return img.resize((TILE_PX, TILE_PX), Image.Resampling.LANCZOS, box=box)

    def _image(self, path: Path) -> Image.Image:
        img = self._images.get(path)
        if img.width != img.height:
            raise InputError(path, f"DB image is {img.width}x{img.height}, expected a square")
        return img

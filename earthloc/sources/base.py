"""The tile-source protocol shared by every imagery back end.

A source serves 256x256 RGB Web-Mercator tiles (EPSG:3857, GoogleMapsCompatible, row 0 = north) for a
set of years. ``z, x, y`` follow the XYZ convention: ``x`` = column, ``y`` = row. The DB builder only
needs :meth:`TileSource.tile` and :attr:`TileSource.years`; sources with a finite footprint also
expose ``covers(z, x, y, year)`` so :func:`earthloc.db.grid.places_covered` can list what they can fill.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from earthloc.errors import InputError
from earthloc.geo.tiles import TILE_PX, TileBlock


class ImageSkipped(Exception):
    """Raised by a source for one (place, year) it declines to fill (e.g. too few clear observations).

    :func:`earthloc.db.build.build_db` goes on without that image and lists it in its report.
    """

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # pickles whole (worker processes, Ray tasks) despite the two-argument __init__
        return type(self), (self.where, self.reason)

class TileMissing(InputError):
    """A tile the source permanently does not have (HTTP 404/410, or a tile the service keeps failing on).

    A DB build records the place that needs it as missing and goes on; every other error stops the build.
    """


@runtime_checkable
class TileSource(Protocol):
    """Anything that serves 256x256 RGB Web-Mercator tiles per year."""

    @property
    def years(self) -> tuple[int, ...]:
        """Years this source can serve, ascending."""
        ...

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """The tile at zoom ``z``, column ``x``, row ``y`` for ``year``: a 256x256 RGB PIL image."""
        ...


def check_tile(img: Image.Image, where: str) -> Image.Image:
    """Return ``img`` as 256x256 RGB; raise ValueError naming ``where`` if it has another size."""
    if img.size != (TILE_PX, TILE_PX):
        raise ValueError(f"{where}: tile is {img.size[0]}x{img.size[1]} px, expected {TILE_PX}x{TILE_PX}")
    return img if img.mode == "RGB" else img.convert("RGB")


def compose(source: TileSource, block: TileBlock, year: int) -> Image.Image:
    """Paste the ``block.size**2`` tiles of ``block`` into one ``(size*256)``-px square RGB image.

    Tile (row r, col c) of the block lands at pixel ``((c - block.col) * 256, (r - block.row) * 256)``,
    the way the official downloader pastes them (north-up, no resampling). A source with a
    ``tiles(keys)`` method gets all keys in one call (so it can fetch them concurrently).
    """
    side = block.size * TILE_PX
    out = Image.new("RGB", (side, side))
    tiles = block.tiles()
    if hasattr(source, "tiles"):  # network sources fetch the block's tiles concurrently
        imgs = source.tiles([(t.z, t.x, t.y, year) for t in tiles])
    else:
        imgs = [source.tile(t.z, t.x, t.y, year) for t in tiles]
    for t, img in zip(tiles, imgs):
        img = check_tile(img, f"tile {t.z}/{t.x}/{t.y} year {year}")
        out.paste(img, ((t.x - block.col) * TILE_PX, (t.y - block.row) * TILE_PX))  # a plain copy, no resampling
    return out


class DecodedImages:
    """A small thread-safe LRU of decoded RGB images, keyed by path.

    Local sources cut many tiles from each image (neighbouring DB places share tiles), so an image is
    decoded once and kept while it is in use. ``what`` names the kind of file in error messages.
    """

    def __init__(self, size: int, what: str = "image"):
        self._cache: OrderedDict[Path, Image.Image] = OrderedDict()
        self._size = size
        self._what = what
        self._lock = threading.Lock()

    def get(self, path: Path) -> Image.Image:
        """The decoded RGB image at ``path``; unreadable file -> InputError naming it."""
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot read {self._what} ({err})") from err
        with self._lock:
            self._cache[path] = img
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return img

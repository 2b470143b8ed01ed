"""The web app's offline basemap: 256-px Web-Mercator tiles cut from the index's own DB images.

A DB image is a 4x4 block of tiles at its native zoom. A tile at any zoom is painted from the DB images
that overlap it: at a native zoom it is the exact crop; at coarser zooms (down to
:data:`OVERVIEW_LEVELS` below an image's native zoom, where a 1024-px image is 16 px wide) the images
are decoded at reduced scale (JPEG draft mode) and shrunk into place; finer native zooms are painted
over coarser ones. Rendered tiles are kept in an LRU cache. Where the DB has no image the tile is
transparent (partly covered tiles are WebP with alpha, full ones JPEG); where nothing at all is, the
answer is None (404).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from earthloc.db import manifest
from earthloc.geo.tiles import TILE_PX

OVERVIEW_LEVELS = 6  # zooms served below an image's native zoom (a 1024-px image is then 16 px wide)
JPEG_QUALITY = 85


@dataclass(frozen=True)
class TileImage:
    """An encoded tile: bytes and media type."""

    data: bytes
    media_type: str


class DbTiles:
    """Tiles of the DB images under ``db_dir`` (its manifest), any zoom from :attr:`min_zoom` up."""

    def __init__(self, db_dir: Path, cache_tiles: int = 2048):
        df = manifest.load(db_dir)
        self.db_dir = Path(db_dir)
        self._groups: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, list[str]]] = {}
        for (zoom, year), g in df.groupby(["zoom", "year"]):
            self._groups[(int(zoom), int(year))] = (g["row"].to_numpy(), g["col"].to_numpy(), g["path"].tolist())
        self.years = tuple(sorted({y for _, y in self._groups}))
        self.native_zooms = tuple(sorted({z for z, _ in self._groups}))
        lats = df[["ll_lat", "ul_lat", "ur_lat", "lr_lat"]].to_numpy()
        lons = df[["ll_lon", "ul_lon", "ur_lon", "lr_lon"]].to_numpy()
        self.extent = ((float(lats.min()), float(lons.min())), (float(lats.max()), float(lons.max())))
        self.min_zoom = max(0, self.native_zooms[0] - OVERVIEW_LEVELS)
        self._cache: OrderedDict[tuple[int, int, int, int], TileImage | None] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()

    def tile(self, year: int, z: int, x: int, y: int) -> TileImage | None:
        """Tile z/x/y of ``year``, or None where no DB image overlaps it (or z < :attr:`min_zoom`)."""
        key = (year, z, x, y)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        out = self._render(year, z, x, y)
        with self._lock:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _render(self, year: int, z: int, x: int, y: int) -> TileImage | None:
        n = 2**z
        if z < self.min_zoom or not (0 <= x < n and 0 <= y < n):
            return None
        canvas = np.zeros((TILE_PX, TILE_PX, 3), np.uint8)
        covered = np.zeros((TILE_PX, TILE_PX), bool)
        painted = False
        for zn in sorted(self.native_zooms, reverse=True):  # finest first; a pixel is painted once
            if zn - z > OVERVIEW_LEVELS or (zn, year) not in self._groups:
                continue
            painted |= self._paint(canvas, covered, self._groups[(zn, year)], zn, z, x, y)
            if covered.all():
                break
        if not painted:
            return None
        img = Image.fromarray(canvas)
        buf = io.BytesIO()
        if covered.all():
            img.save(buf, format="JPEG", quality=JPEG_QUALITY)
            return TileImage(buf.getvalue(), "image/jpeg")
        img.putalpha(Image.fromarray((covered * 255).astype(np.uint8)))
        img.save(buf, format="WEBP", quality=JPEG_QUALITY)
        return TileImage(buf.getvalue(), "image/webp")

    def _paint(self, canvas: np.ndarray, covered: np.ndarray, group, zn: int, z: int, x: int, y: int) -> bool:
        """Paint the images of one native zoom ``zn`` overlapping tile z/x/y where the canvas is still empty."""
        rows, cols, paths = group
        t = TILE_PX * 2.0 ** (z - zn)  # canvas px per native tile
        r0, c0 = y * TILE_PX / t, x * TILE_PX / t  # the tile's top-left in native tile units
        span = TILE_PX / t
        hit = np.flatnonzero((rows < r0 + span) & (rows + 4 > r0) & (cols < c0 + span) & (cols + 4 > c0))
        painted = False
        for i in hit:
            left, top = (cols[i] - c0) * t, (rows[i] - r0) * t  # the image's top-left on the canvas
            a, b = max(0, int(np.floor(left))), min(TILE_PX, int(np.ceil(left + 4 * t)))
            c, d = max(0, int(np.floor(top))), min(TILE_PX, int(np.ceil(top + 4 * t)))
            if a >= b or c >= d or covered[c:d, a:b].all():
                continue
            canvas[c:d, a:b] = np.where(covered[c:d, a:b, None], canvas[c:d, a:b],
                                        _crop(self.db_dir / paths[i], 4 * t, (a - left, c - top, b - left, d - top)))
            covered[c:d, a:b] = True
            painted = True
        return painted


@lru_cache(maxsize=24)
def _decoded(path: Path, size: int) -> Image.Image:
    """The image at ``path`` decoded at the smallest JPEG scale (1, 1/2, 1/4, 1/8) still ``size`` px wide."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # no-op unless JPEG and size <= half the image
        return img.convert("RGB")


def _crop(path: Path, size: float, box: tuple[float, float, float, float]) -> np.ndarray:
    """Pixels of ``box`` (in a frame where the whole image is ``size`` px wide) of the image at ``path``,
    resampled to the box's size."""
    img = _decoded(path, max(1, int(size)))
    s = img.width / size
    src = (box[0] * s, box[1] * s, box[2] * s, box[3] * s)
    if s == 1:
        return np.asarray(img.crop((round(src[0]), round(src[1]), round(src[2]), round(src[3]))))
    out = (round(box[2] - box[0]), round(box[3] - box[1]))
    return np.asarray(img.resize(out, Image.Resampling.LANCZOS, box=src))

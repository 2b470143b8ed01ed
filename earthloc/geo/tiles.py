"""Web-Mercator (EPSG:3857, GoogleMapsCompatible, 256-px tiles, row 0 = north) tile math.

A DB image is a square block of ``size x size`` WMTS tiles (EarthLoc: 4x4 = 1024 px) named
``ZZ_RRRR_CCCC`` after its top-left tile. Pixels inside a block are linear in longitude and in
Mercator y, *not* in latitude: :meth:`TileBlock.pixel_to_lonlat` and :meth:`TileBlock.lonlat_to_pixel`
are exact at any zoom and latitude. Tile bounds come from ``mercantile``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import mercantile
import numpy as np

from earthloc.errors import InputError

TILE_PX = 256
MAX_MERCATOR_LAT = 85.0511287798066


def fractional_tile(lon: np.ndarray | float, lat: np.ndarray | float, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional tile coordinates ``(X, Y)`` of lon/lat (degrees) at ``zoom``; Y grows southwards."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.clip(np.asarray(lat, dtype=np.float64), -MAX_MERCATOR_LAT, MAX_MERCATOR_LAT)
    n = 2.0**zoom
    s = np.sin(np.radians(lat))
    x = (lon + 180.0) / 360.0 * n
    y = (0.5 - np.log((1 + s) / (1 - s)) / (4 * math.pi)) * n
    return x, y


def lonlat_from_fractional(x: np.ndarray | float, y: np.ndarray | float, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`fractional_tile`: lon/lat in degrees of fractional tile coordinates."""
    n = 2.0**zoom
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    lon = x / n * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(math.pi * (1 - 2 * y / n))))
    return lon, lat


@dataclass(frozen=True, order=True)
class TileBlock:
    """A ``size x size`` block of WMTS tiles with top-left tile (``row``, ``col``) at ``zoom``.

    EarthLoc DB images are ``size=4`` (1024 px); EarthMatch "surroundings" are ``size=12``.
    """

    zoom: int
    row: int
    col: int
    size: int = 4

    def __post_init__(self) -> None:
        n = 2**self.zoom
        if not (0 <= self.zoom <= 24):
            raise InputError(f"tile {self.zoom}/{self.row}/{self.col}", "zoom must be in 0..24")
        if self.size < 1 or not (0 <= self.row and self.row + self.size <= n and 0 <= self.col < n):
            raise InputError(f"tile {self.zoom}/{self.row}/{self.col}", f"block of {self.size} leaves the {n}x{n} grid")

    # --- names -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Official image id ``ZZ_RRRR_CCCC`` (row/col zero-padded to at least 4 digits)."""
        return f"{self.zoom:02d}_{self.row:04d}_{self.col:04d}"

    @classmethod
    def from_name(cls, name: str, size: int = 4) -> TileBlock:
        """Parse ``ZZ_RRRR_CCCC`` (as in official file names and EarthMatch candidate names)."""
        parts = name.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise InputError(name, "tile name must look like ZZ_RRRR_CCCC")
        z, r, c = (int(p) for p in parts)
        return cls(z, r, c, size)

    # --- geometry ----------------------------------------------------------------------------
    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees; exact Web-Mercator tile edges."""
        nw = mercantile.bounds(self.col, self.row, self.zoom)
        se = mercantile.bounds(self.col + self.size - 1, self.row + self.size - 1, self.zoom)
        return (nw.west, se.south, se.east, nw.north)

    @property
    def lonlat_box_centre(self) -> tuple[float, float]:
        """``(lat, lon)`` midpoint of the lat and lon bounds, as the official names store it."""
        w, s, e, n = self.bounds
        return ((s + n) / 2, (w + e) / 2)

    @property
    def centre(self) -> tuple[float, float]:
        """``(lat, lon)`` of the block's pixel centre (the Mercator centre; differs from the box midpoint)."""
        lon, lat = lonlat_from_fractional(self.col + self.size / 2, self.row + self.size / 2, self.zoom)
        return (float(lat), float(lon))

    @property
    def corners(self) -> tuple[tuple[float, float], ...]:
        """Corners ``(lat, lon)`` in official DB order LL, UL, UR, LR = (S,W), (N,W), (N,E), (S,E)."""
        w, s, e, n = self.bounds
        return ((s, w), (n, w), (n, e), (s, e))

    def tiles(self) -> list[mercantile.Tile]:
        """The ``size**2`` WMTS tiles, row-major from the top-left."""
        return [
            mercantile.Tile(self.col + dc, self.row + dr, self.zoom)
            for dr in range(self.size)
            for dc in range(self.size)
        ]

    def surrounding(self, margin: int = 4) -> TileBlock:
        """The block grown by ``margin`` tiles on each side (EarthMatch context: 4x4 -> 12x12)."""
        return TileBlock(self.zoom, self.row - margin, self.col - margin, self.size + 2 * margin)

    def metres_per_pixel(self, width_px: int | None = None) -> float:
        """Ground size of one pixel at the block centre, in metres (Web-Mercator scale corrected by cos(lat))."""
        width_px = width_px or self.size * TILE_PX
        lat = math.radians(self.centre[0])
        return 2 * math.pi * 6378137.0 / 2**self.zoom * self.size / width_px * math.cos(lat)

    # --- pixels <-> lon/lat ------------------------------------------------------------------
    def pixel_to_lonlat(self, x, y, width_px: int | None = None, height_px: int | None = None):
        """Lon/lat (degrees) of pixel coordinates ``(x, y)`` in a ``width x height`` image of this block.

        Pixel (0, 0) is the top-left corner of the top-left pixel; (width, height) the bottom-right
        corner. Exact: x is linear in longitude, y linear in Mercator y. Arrays broadcast.
        """
        width_px = width_px or self.size * TILE_PX
        height_px = height_px or width_px
        fx = self.col + np.asarray(x, dtype=np.float64) / width_px * self.size
        fy = self.row + np.asarray(y, dtype=np.float64) / height_px * self.size
        return lonlat_from_fractional(fx, fy, self.zoom)

    def lonlat_to_pixel(self, lon, lat, width_px: int | None = None, height_px: int | None = None):
        """Pixel coordinates ``(x, y)`` of lon/lat (degrees) in a ``width x height`` image of this block."""
        width_px = width_px or self.size * TILE_PX
        height_px = height_px or width_px
        fx, fy = fractional_tile(lon, lat, self.zoom)
        return (fx - self.col) / self.size * width_px, (fy - self.row) / self.size * height_px

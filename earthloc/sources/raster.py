"""Tiles warped from local GeoTIFF / COG rasters (one raster per year) with rasterio.

Each tile is read through a :class:`rasterio.vrt.WarpedVRT` whose grid *is* the tile: EPSG:3857, the
tile's exact Web-Mercator bounds, 256x256 px. GDAL then reads only the source blocks (or overviews) it
needs, whatever the source CRS and grid, so rasters of different years need not share a grid (the
NAIP quarter-quads shift by a few metres between years) and still land on the same tile pixels.

Bands: ``bands`` (1-based) picks the three channels shown as RGB, default the first three (a
one-band raster is shown grey). Non-uint8 rasters are scaled linearly from ``scale=(lo, hi)`` to 0..255;
without ``scale``, ``lo``/``hi`` are the 2nd/98th percentiles of a decimated read of each raster.
Pixels outside the raster or equal to its nodata value are black.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path

import mercantile
import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT

from earthloc.errors import InputError
from earthloc.geo.tiles import TILE_PX, fractional_tile

_RESAMPLING = ("nearest", "bilinear", "cubic", "lanczos", "average")


class RasterSource:
    """A :class:`~earthloc.sources.base.TileSource` over ``{year: raster path}``."""

    def __init__(self, paths: Mapping[int, str | Path], bands: tuple[int, ...] | None = None,
                 resampling: str = "bilinear", scale: tuple[float, float] | None = None):
        if not paths:
            raise InputError("RasterSource", "no rasters given")
        if resampling not in _RESAMPLING:
            raise InputError(f"resampling {resampling!r}", f"use one of {', '.join(_RESAMPLING)}")
        self.paths = {int(y): Path(p) for y, p in sorted(paths.items())}
        self.resampling = resampling
        self._local = threading.local()
        self._info = {}
        for year, path in self.paths.items():
            try:
                with rasterio.open(path) as ds:
                    if ds.crs is None:
                        raise InputError(path, "raster has no CRS (not georeferenced)")
                    b = bands or ((1, 2, 3) if ds.count >= 3 else (1, 1, 1))
                    if len(b) != 3 or not all(1 <= i <= ds.count for i in b):
                        raise InputError(path, f"bands {b} invalid for a {ds.count}-band raster")
                    lo_hi = scale or (None if ds.dtypes[0] == "uint8" else _percentiles(ds, b))
                    bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
                    res_m = _pixel_metres(ds)
            except rasterio.errors.RasterioIOError as err:
                raise InputError(path, f"cannot open raster ({err})") from err
            self._info[year] = {"bands": tuple(b), "scale": lo_hi, "bounds": bounds, "res_m": res_m}

    @property
    def years(self) -> tuple[int, ...]:
        """Years with a raster (sorted)."""
        return tuple(self.paths)

    def bounds(self, year: int) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees of the raster of ``year``."""
        return self._info[year]["bounds"]

    @property
    def native_zooms(self) -> tuple[int, ...]:
        """The zoom whose Web-Mercator pixel best matches the finest raster resolution."""
        res = min(i["res_m"] for i in self._info.values())
        lat = np.mean([(i["bounds"][1] + i["bounds"][3]) / 2 for i in self._info.values()])
        z = math.log2(2 * math.pi * 6378137.0 * math.cos(math.radians(lat)) / TILE_PX / res)
        return (int(min(22, max(0, round(z)))),)

    def _tile_range(self, zoom: int, year: int) -> tuple[float, float, float, float]:
        w, s, e, n = self.bounds(year)
        x0, y0 = fractional_tile(w, n, zoom)
        x1, y1 = fractional_tile(e, s, zoom)
        return float(x0), float(y0), float(x1), float(y1)

    def coverage(self, zoom: int, native_only: bool = False) -> list[tuple[int, int, int, int]]:
        """Tile ranges ``(row_lo, row_hi, col_lo, col_hi)`` touched by each year's raster."""
        out = []
        for year in self.paths:
            x0, y0, x1, y1 = self._tile_range(zoom, year)
            out.append((math.floor(y0), math.ceil(y1), math.floor(x0), math.ceil(x1)))
        return sorted(set(out))

    def covers(self, z: int, x: int, y: int, year: int) -> bool:
        """True when tile z/x/y lies inside the raster's (lon/lat) bounds for ``year``."""
        if year not in self._info:
            return False
        x0, y0, x1, y1 = self._tile_range(z, year)
        return x0 <= x and x + 1 <= x1 and y0 <= y and y + 1 <= y1

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """The 256-px RGB tile z/x/y of ``year``, warped from the raster to Web Mercator."""
        if year not in self.paths:
            raise InputError(f"year {year}", f"no raster for it (years {list(self.paths)})")
        info = self._info[year]
        b = mercantile.xy_bounds(x, y, z)
        transform = from_bounds(b.left, b.bottom, b.right, b.top, TILE_PX, TILE_PX)
        ds = self._dataset(year)
        with WarpedVRT(ds, crs="EPSG:3857", transform=transform, width=TILE_PX, height=TILE_PX,
                       resampling=Resampling[self.resampling], nodata=0) as vrt:
            arr = vrt.read(indexes=list(info["bands"]))  # (3, 256, 256), 0 outside / at nodata
        if info["scale"] is not None:
            lo, hi = info["scale"]
            valid = arr != 0
            arr = np.where(valid, np.clip((arr.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255, 1, 255), 0)
        return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)).astype(np.uint8), "RGB")

    def _dataset(self, year: int):
        """A rasterio dataset per thread and year (datasets are not thread-safe)."""
        cache = getattr(self._local, "ds", None)
        if cache is None:
            cache = self._local.ds = {}
        if year not in cache:
            cache[year] = rasterio.open(self.paths[year])
        return cache[year]


def _percentiles(ds, bands: tuple[int, ...]) -> tuple[float, float]:
    """2nd/98th percentile of valid pixels over a decimated read (at most ~1024 px on the long side)."""
    f = max(1, max(ds.width, ds.height) // 1024)
    arr = ds.read(list(bands), out_shape=(3, max(1, ds.height // f), max(1, ds.width // f))).astype(np.float64)
    valid = arr[arr != (ds.nodata if ds.nodata is not None else np.nan)]
    if valid.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(valid, [2, 98])
    return float(lo), float(max(hi, lo + 1))


def _pixel_metres(ds) -> float:
    """Approximate ground size of one source pixel in metres (geographic CRSs converted at the centre)."""
    res = abs(ds.transform.a)
    if ds.crs.is_geographic:
        lat = (ds.bounds.bottom + ds.bounds.top) / 2
        return res * math.pi / 180 * 6378137.0 * math.cos(math.radians(lat))
    return res * (ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0)

"""The EarthLoc place grid: 4x4-tile blocks at zooms 9/10/11, stride 2 tiles, |lat| <= 60, land only.

A place is the block of tiles rows ``row..row+3``, cols ``col..col+3`` with ``row`` and ``col`` even, so
neighbours overlap by half. Rules (the official land criterion was not published; these are ours):

- **latitude**: the whole block lies within ``|lat| <= max_abs_lat`` (its north edge <= 60 and south
  edge >= -60; the official tiles we know reach 59.89 N at most, which fits this rule);
- **land**: each tile is sampled on a ``4x4`` grid of points evenly spaced in Web-Mercator pixels
  (cell centres) against the 1-km GLOBE land mask of the ``global-land-mask`` package; a block is land
  when at least ``min_land`` of its 256 samples are land. The default :data:`MIN_LAND` = 1/256 (any
  land sample) keeps 8,468 of the 8,475 official 2021 tiles we know (99.9%), at the price of a global
  count 10.7% above the official 161,496; docs/db.md tabulates other thresholds.

Regions: :meth:`Region.bbox` keeps blocks that intersect the box (Web-Mercator test, antimeridian-aware
when ``west > east``); :meth:`Region.circle` and :meth:`Region.area` keep blocks whose stored centre is
within ``radius_km`` (haversine, R = 6371 km), like the official DB subsets of the test areas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from global_land_mask import globe

from earthloc.errors import InputError
from earthloc.geo.areas import TEST_AREAS
from earthloc.geo.footprint import haversine_km
from earthloc.geo.tiles import MAX_MERCATOR_LAT, TileBlock, fractional_tile, lonlat_from_fractional

DEFAULT_ZOOMS = (9, 10, 11)
MIN_LAND = 1 / 256
SAMPLES_PER_TILE = 4
OFFICIAL_PLACES = 161_496
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Region:
    """Where to build: the whole world, a lon/lat box, or a circle (centre + radius in km)."""

    kind: str = "world"  # "world" | "bbox" | "circle"
    west: float = -180.0
    south: float = -90.0
    east: float = 180.0
    north: float = 90.0
    lat: float = 0.0
    lon: float = 0.0
    radius_km: float = 0.0
    name: str = "world"

    @classmethod
    def world(cls) -> Region:
        """Every place of the Earth (no region filter)."""
        return cls()

    @classmethod
    def bbox(cls, west: float, south: float, east: float, north: float) -> Region:
        """Blocks intersecting the box (degrees). ``west > east`` means the box crosses the antimeridian."""
        if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south < north <= 90):
            raise InputError(f"bbox {west},{south},{east},{north}", "need -180<=W,E<=180 and -90<=S<N<=90")
        return cls("bbox", west, south, east, north, name=f"bbox:{west},{south},{east},{north}")

    @classmethod
    def circle(cls, lat: float, lon: float, radius_km: float, name: str | None = None) -> Region:
        """Blocks whose stored centre is within ``radius_km`` of (lat, lon), haversine."""
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and radius_km > 0):
            raise InputError(f"circle {lat},{lon},{radius_km}", "need -90<=lat<=90, -180<=lon<=180, radius > 0 km")
        return cls("circle", lat=lat, lon=lon, radius_km=radius_km, name=name or f"circle:{lat},{lon},{radius_km}")

    @classmethod
    def area(cls, name: str, radius_km: float = 5000.0) -> Region:
        """An official test area (alps, texas, toshka, amazon, napa, gobi); default radius = the DB subset's 5000 km."""
        key = name.strip().lower()
        if key not in TEST_AREAS:
            raise InputError(f"area {name!r}", f"unknown; known areas: {', '.join(sorted(TEST_AREAS))}")
        lat, lon = TEST_AREAS[key]
        return cls.circle(lat, lon, radius_km, name=key)

    @classmethod
    def parse(cls, text: str) -> Region:
        """CLI syntax: ``world``, ``bbox:W,S,E,N``, ``circle:LAT,LON,KM``, ``AREA`` or ``AREA:KM``."""
        text = text.strip()
        kind, _, args = text.partition(":")
        try:
            nums = [float(v) for v in args.split(",")] if args else []
        except ValueError as err:
            raise InputError(f"region {text!r}", "numbers expected after ':'") from err
        if kind in ("world", "global") and not args:
            return cls.world()
        if kind == "bbox" and len(nums) == 4:
            return cls.bbox(*nums)
        if kind == "circle" and len(nums) == 3:
            return cls.circle(nums[0], nums[1], nums[2])
        if kind not in ("bbox", "circle") and len(nums) <= 1:
            return cls.area(kind, *nums)
        raise InputError(f"region {text!r}", "use world, bbox:W,S,E,N, circle:LAT,LON,KM, or an area name[:KM]")

    # --- candidate tile ranges and exact test -------------------------------------------------
    def _lon_lat_box(self) -> tuple[list[tuple[float, float]], float, float]:
        """Lon intervals and lat range that contain the region (a superset for circles)."""
        if self.kind == "bbox":
            lons = [(self.west, self.east)] if self.west <= self.east else [(self.west, 180.0), (-180.0, self.east)]
            return lons, self.south, self.north
        if self.kind == "circle":
            d = math.degrees(self.radius_km / EARTH_RADIUS_KM)
            s, n = max(-90.0, self.lat - d), min(90.0, self.lat + d)
            arg = math.sin(self.radius_km / EARTH_RADIUS_KM) / max(math.cos(math.radians(self.lat)), 1e-12)
            if n >= 90 or s <= -90 or arg >= 1 or self.radius_km / EARTH_RADIUS_KM >= math.pi / 2:
                return [(-180.0, 180.0)], s, n
            dl = math.degrees(math.asin(arg))
            w, e = self.lon - dl, self.lon + dl
            if w < -180:
                return [(w + 360, 180.0), (-180.0, e)], s, n
            if e > 180:
                return [(w, 180.0), (-180.0, e - 360)], s, n
            return [(w, e)], s, n
        return [(-180.0, 180.0)], -90.0, 90.0

    def keep(self, zoom: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Boolean mask over blocks (top-left ``rows``, ``cols``) at ``zoom`` that belong to the region."""
        if self.kind == "circle":
            lat, lon = _box_centres(zoom, rows, cols)
            return np.asarray(haversine_km(self.lat, self.lon, lat, lon) <= self.radius_km)
        if self.kind == "bbox":
            lons, s, n = self._lon_lat_box()
            _, y_n = fractional_tile(0.0, min(n, MAX_MERCATOR_LAT), zoom)
            _, y_s = fractional_tile(0.0, max(s, -MAX_MERCATOR_LAT), zoom)
            ok_rows = (rows < y_s) & (rows + 4 > y_n)
            ok_cols = np.zeros(rows.shape, bool)
            for w, e in lons:
                x_w, _ = fractional_tile(w, 0.0, zoom)
                x_e, _ = fractional_tile(e, 0.0, zoom)
                ok_cols |= (cols < x_e) & (cols + 4 > x_w)
            return ok_rows & ok_cols
        return np.ones(rows.shape, bool)

    def tile_ranges(self, zoom: int) -> list[tuple[int, int, int, int]]:
        """Even-aligned block ranges ``(row_lo, row_hi, col_lo, col_hi)`` (half-open, top-left tiles) to test."""
        n = 2**zoom
        lons, s, nth = self._lon_lat_box()
        _, y0 = fractional_tile(0.0, min(nth, MAX_MERCATOR_LAT), zoom)
        _, y1 = fractional_tile(0.0, max(s, -MAX_MERCATOR_LAT), zoom)
        r_lo, r_hi = _even_range(float(y0), float(y1), n)
        out = []
        for w, e in lons:
            x0, _ = fractional_tile(w, 0.0, zoom)
            x1, _ = fractional_tile(e, 0.0, zoom)
            out.append((r_lo, r_hi, *_even_range(float(x0), float(x1), n)))
        return out


def _even_range(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Even top-left indices of 4-wide blocks that may overlap [lo, hi] on a grid of ``n`` tiles."""
    a = max(0, int(math.floor(lo)) - 4)
    a -= a % 2
    b = min(n - 3, int(math.ceil(hi)) + 1)
    return a, max(a, b)


def _box_centres(zoom: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of the lat/lon-box midpoint of 4x4 blocks (what official names store)."""
    lon_w, lat_n = lonlat_from_fractional(cols, rows, zoom)
    lon_e, lat_s = lonlat_from_fractional(cols + 4, rows + 4, zoom)
    return (lat_n + lat_s) / 2, (lon_w + lon_e) / 2


def tile_land_fraction(zoom: int, row_lo: int, row_hi: int, col_lo: int, col_hi: int,
                       samples: int = SAMPLES_PER_TILE) -> np.ndarray:
    """Share of land among ``samples x samples`` points per tile, for tiles rows [lo,hi) x cols [lo,hi).

    Points sit at cell centres evenly spaced in Web-Mercator pixels. Returns float array (rows, cols).
    """
    fy = row_lo + (np.arange((row_hi - row_lo) * samples) + 0.5) / samples
    fx = col_lo + (np.arange((col_hi - col_lo) * samples) + 0.5) / samples
    lon, _ = lonlat_from_fractional(fx, np.zeros_like(fx), zoom)
    _, lat = lonlat_from_fractional(np.zeros_like(fy), fy, zoom)
    land = globe.is_land(lat[:, None], lon[None, :])  # broadcast (R*s, 1) x (1, C*s)
    return land.reshape(row_hi - row_lo, samples, col_hi - col_lo, samples).mean(axis=(1, 3))


def block_land_fraction(zoom: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Land share of 4x4 blocks with top-left (rows, cols) at ``zoom`` (256 samples per block)."""
    out = np.zeros(len(rows))
    for r in np.unique(rows):  # one band of 4 tile rows at a time keeps memory small
        sel = rows == r
        c = cols[sel]
        frac = tile_land_fraction(zoom, int(r), int(r) + 4, int(c.min()), int(c.max()) + 4)
        csum = np.concatenate([np.zeros((4, 1)), np.cumsum(frac, axis=1)], axis=1)
        rel = c - c.min()
        out[sel] = (csum[:, rel + 4] - csum[:, rel]).sum(axis=0) / 16
    return out


def places(
    zooms: Sequence[int] = DEFAULT_ZOOMS,
    region: Region | None = None,
    max_abs_lat: float = 60.0,
    land_only: bool = True,
    min_land: float = MIN_LAND,
) -> list[TileBlock]:
    """DB places (4x4 blocks, even row/col) at ``zooms`` inside ``region`` (default: world), sorted."""
    region = region or Region.world()
    out: list[TileBlock] = []
    for z in zooms:
        if not 2 <= z <= 20:
            raise InputError(f"zoom {z}", "DB zooms must be in 2..20")
        seen: set[tuple[int, int]] = set()
        for r_lo, r_hi, c_lo, c_hi in region.tile_ranges(z):
            rr, cc = np.meshgrid(np.arange(r_lo, r_hi, 2), np.arange(c_lo, c_hi, 2), indexing="ij")
            rows, cols = rr.ravel(), cc.ravel()
            _, lat_n = lonlat_from_fractional(cols, rows, z)
            _, lat_s = lonlat_from_fractional(cols, rows + 4, z)
            keep = (lat_n <= max_abs_lat) & (lat_s >= -max_abs_lat) & region.keep(z, rows, cols)
            rows, cols = rows[keep], cols[keep]
            if land_only and len(rows):
                keep = block_land_fraction(z, rows, cols) >= min_land
                rows, cols = rows[keep], cols[keep]
            seen.update(zip(rows.tolist(), cols.tolist()))
        out += [TileBlock(z, r, c) for r, c in sorted(seen)]
    return out


def places_covered(source, zooms: Iterable[int] | None = None, years: Iterable[int] | None = None) -> list[TileBlock]:
    """Places (4x4, even row/col) whose 16 tiles ``source`` can serve for every year in ``years``.

    ``source`` must expose ``coverage(zoom, native_only)`` (tile ranges it may cover), ``covers(z, x, y, year)`` and
    ``native_zooms``; :class:`~earthloc.sources.mosaic.MosaicSource`, ``RasterSource`` and ``OfficialSource``
    do. ``zooms=None`` uses the source's native zooms (for iss_mini: each context's own zoom), ``years=None``
    all of the source's years.
    """
    if not hasattr(source, "coverage"):
        raise InputError(type(source).__name__, "source has no finite coverage; give a region instead")
    native = zooms is None
    zooms = sorted(source.native_zooms) if zooms is None else sorted(set(zooms))
    years = list(years) if years is not None else list(source.years)
    found: set[TileBlock] = set()
    for z in zooms:
        for r_lo, r_hi, c_lo, c_hi in source.coverage(z, native_only=native):
            for r in range(r_lo + r_lo % 2, r_hi - 3, 2):
                for c in range(c_lo + c_lo % 2, c_hi - 3, 2):
                    b = TileBlock(z, r, c)
                    if b in found:
                        continue
                    if all(_covers_block(source, b, y) for y in years):
                        found.add(b)
    return sorted(found)


def _covers_block(source, block: TileBlock, year: int) -> bool:
    """Fast path ``source.covers_block`` when offered, else every tile through ``source.covers``."""
    if hasattr(source, "covers_block") and source.covers_block(block, year):
        return True
    return all(source.covers(t.z, t.x, t.y, year) for t in block.tiles())


def select_places(
    source,
    region: Region | None = None,
    zooms: Sequence[int] | None = None,
    years: Sequence[int] | None = None,
    max_abs_lat: float = 60.0,
    land_only: bool = True,
    min_land: float = MIN_LAND,
) -> list[TileBlock]:
    """What ``earthloc db build`` builds.

    - A source with a finite footprint (mosaics, rasters, an official folder): the places it fully covers
      (:func:`places_covered`; ``zooms=None`` = its native zooms), cut to ``region`` when one is given.
      No land or latitude filter: the imagery decides.
    - An unbounded source (WMTS): the grid :func:`places` in ``region`` (required) at ``zooms``
      (default 9, 10, 11), ``|lat| <= max_abs_lat``, land only unless ``land_only=False``.
    """
    if hasattr(source, "coverage"):
        found = places_covered(source, zooms, years)
        if region is None or region.kind == "world":
            return found
        keep = []
        for z in sorted({b.zoom for b in found}):
            blocks = [b for b in found if b.zoom == z]
            mask = region.keep(z, np.array([b.row for b in blocks]), np.array([b.col for b in blocks]))
            keep += [b for b, k in zip(blocks, mask) if k]
        return keep
    if region is None:
        raise InputError("region", "required for a tile service: world, bbox:W,S,E,N, circle:LAT,LON,KM or an area")
    return places(zooms or DEFAULT_ZOOMS, region, max_abs_lat, land_only, min_land)

"""Footprints: the ground quadrilateral of a photo or DB image, measured on the ellipsoid.

Corners are ``(lat, lon)`` in degrees, as in official file names. Areas are geodesic (WGS84, via
``pyproj.Geod``). Intersections and IoU are computed in metres in a Lambert azimuthal equal-area
projection centred on the pair, so they are area-true and work across the antimeridian (longitudes
are unwrapped around the first footprint before projecting).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyproj
import shapely
from shapely.geometry import Polygon

from earthloc.errors import InputError

GEOD = pyproj.Geod(ellps="WGS84")
EARTH_RADIUS_KM = 6371.0  # the official protocol's haversine radius


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray | float:
    """Great-circle distance in km on a sphere of radius 6371 km (the official protocol's rule). Broadcasts."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _check_latlon(lat: float, lon: float, where: object) -> None:
    if not (np.isfinite(lat) and np.isfinite(lon)):
        raise InputError(where, f"coordinate is not a number: ({lat}, {lon})")
    if not -90 <= lat <= 90:
        raise InputError(where, f"latitude {lat} outside [-90, 90]")
    if not -360 <= lon <= 360:
        raise InputError(where, f"longitude {lon} outside [-360, 360]")


def _unwrap(lons: np.ndarray, ref: float) -> np.ndarray:
    """Shift longitudes by multiples of 360 so each lies within 180 degrees of ``ref``."""
    return ref + (lons - ref + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class Footprint:
    """A ground quadrilateral (or any simple polygon) given by its corners ``(lat, lon)`` in degrees."""

    corners: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.corners) < 3:
            raise InputError("footprint", f"needs at least 3 corners, got {len(self.corners)}")
        for lat, lon in self.corners:
            _check_latlon(lat, lon, "footprint")

    @classmethod
    def from_bounds(cls, west: float, south: float, east: float, north: float) -> Footprint:
        """An axis-aligned lat/lon box, corners in official DB order (S,W), (N,W), (N,E), (S,E)."""
        return cls(((south, west), (north, west), (north, east), (south, east)))

    @cached_property
    def lats(self) -> np.ndarray:
        """Corner latitudes in degrees, shape (n_corners,)."""
        return np.array([c[0] for c in self.corners], dtype=np.float64)

    @cached_property
    def lons(self) -> np.ndarray:
        """Corner longitudes, unwrapped so the polygon never jumps across the antimeridian."""
        raw = np.array([c[1] for c in self.corners], dtype=np.float64)
        return _unwrap(raw, raw[0])

    @property
    def centroid(self) -> tuple[float, float]:
        """``(lat, lon)`` of the area centroid, computed in the equal-area projection, lon in [-180, 180)."""
        proj = self._laea()
        x, y = proj.transform(self.lons, self.lats)
        c = Polygon(zip(x, y)).centroid
        lon, lat = proj.transform(c.x, c.y, direction="INVERSE")
        return (float(lat), float((lon + 180) % 360 - 180))

    @property
    def area_km2(self) -> float:
        """Geodesic area on WGS84 in km²."""
        area, _ = GEOD.polygon_area_perimeter(self.lons, self.lats)
        return abs(area) / 1e6

    @property
    def polygon_lonlat(self) -> Polygon:
        """Shapely polygon in (lon, lat) degrees, for GeoJSON/KML output (lon unwrapped, may exceed 180)."""
        return Polygon(zip(self.lons, self.lats))

    def _laea(self, lat0: float | None = None, lon0: float | None = None) -> pyproj.Transformer:
        lat0 = float(self.lats.mean()) if lat0 is None else lat0
        lon0 = float(self.lons.mean()) if lon0 is None else lon0
        # A bare PROJ pipeline (degrees -> LAEA metres) builds in ~50 us; going through CRS objects
        # took ~40 ms per footprint, which made per-photo centroids/IoU unusably slow over 17k photos.
        return pyproj.Transformer.from_pipeline(
            "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
            f"+step +proj=laea +lat_0={lat0} +lon_0={lon0} +ellps=WGS84"
        )

    def polygon_m(self, proj: pyproj.Transformer, lon_ref: float) -> Polygon:
        """This footprint as a shapely polygon in metres of ``proj`` (lons unwrapped around ``lon_ref``)."""
        x, y = proj.transform(_unwrap(self.lons, lon_ref), self.lats)
        return shapely.make_valid(Polygon(zip(x, y)))

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point lies inside (or on the edge of) the footprint."""
        proj = self._laea()
        x, y = proj.transform(_unwrap(np.array([lon]), float(self.lons.mean())), np.array([lat]))
        return bool(self.polygon_m(proj, float(self.lons.mean())).covers(shapely.Point(x[0], y[0])))

    def scaled(self, factor: float) -> Footprint:
        """The footprint scaled by ``factor`` about its centroid, in metres (EarthMatch's 3x rule uses 3)."""
        proj = self._laea()
        lon_ref = float(self.lons.mean())
        x, y = proj.transform(self.lons, self.lats)
        c = Polygon(zip(x, y)).centroid
        xs, ys = c.x + factor * (np.asarray(x) - c.x), c.y + factor * (np.asarray(y) - c.y)
        lon, lat = proj.transform(xs, ys, direction="INVERSE")
        lon = _unwrap(np.asarray(lon), lon_ref)
        return Footprint(tuple((float(a), float((o + 180) % 360 - 180)) for a, o in zip(lat, lon)))


def _pair(a: Footprint, b: Footprint) -> tuple[Polygon, Polygon]:
    lat0 = float(np.r_[a.lats, b.lats].mean())
    lon_ref = float(a.lons.mean())
    lon0 = float(np.r_[a.lons, _unwrap(b.lons, lon_ref)].mean())
    proj = a._laea(lat0, lon0)
    return a.polygon_m(proj, lon_ref), b.polygon_m(proj, lon_ref)


def intersection_km2(a: Footprint, b: Footprint) -> float:
    """Area of ``a ∩ b`` in km², computed in metres on an equal-area projection centred on the pair."""
    pa, pb = _pair(a, b)
    return pa.intersection(pb).area / 1e6


def intersects(a: Footprint, b: Footprint) -> bool:
    """Whether the two footprints share any area (touching edges do not count)."""
    pa, pb = _pair(a, b)
    return pa.intersection(pb).area > 0


def iou(a: Footprint, b: Footprint) -> float:
    """Intersection over union of two footprints, in [0, 1], measured in metres (equal-area)."""
    pa, pb = _pair(a, b)
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return float(inter / union) if union > 0 else 0.0

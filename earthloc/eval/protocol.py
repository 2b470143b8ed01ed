"""The official EarthLoc test protocol: six areas, selection radii, positives, drop rule, recall.

* Areas: a centre (lat, lon) each. Photos are selected when their ISS **nadir** is < 2500 km from the
  centre, DB images (2021) when their **footprint centre** (as stored in the name) is < 5000 km away;
  distances are haversine with R = 6371 km.
* Positives of a photo: the DB images whose footprint intersects the photo footprint (area > 0;
  the authors' lists at IoU 0.25/0.50 are the same rule with ``min_iou``).
* Drop rule: a selected photo is dropped when it has no positive in the whole DB, or when any of its
  positives lies outside the area's DB subset.
* R@N: percentage of queries with a positive among the first N results.

Intersections are computed in metres: every candidate pair is projected with one Lambert azimuthal
equal-area projection centred on the photo (areas are exact on the WGS84 ellipsoid whatever the centre),
vectorised with shapely over all DB images near the photo.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import shapely

from earthloc.db.manifest import load
from earthloc.errors import InputError
from earthloc.geo.areas import area_centre
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.records import Photo

PHOTO_RADIUS_KM = 2500.0
DB_RADIUS_KM = 5000.0
RECALL_NS = (1, 5, 10, 20, 100)
CORNER_COLUMNS = ("ll_lat", "ll_lon", "ul_lat", "ul_lon", "ur_lat", "ur_lon", "lr_lat", "lr_lon")


# --- selection ---------------------------------------------------------------------------------
def select_photos(photos: Sequence[Photo], area: str | tuple[float, float], radius_km: float = PHOTO_RADIUS_KM) -> list[Photo]:
    """Photos whose nadir is strictly closer than ``radius_km`` to the area centre (no nadir: not selected)."""
    lat0, lon0 = area_centre(area)
    with_nadir = [p for p in photos if p.nadir is not None]
    if not with_nadir:
        return []
    nad = np.array([p.nadir for p in with_nadir], dtype=np.float64)
    keep = np.asarray(haversine_km(lat0, lon0, nad[:, 0], nad[:, 1]) < radius_km)
    return [p for p, k in zip(with_nadir, keep) if k]


def db_centres(db_frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Footprint centres (lat, lon) of a DB table (``centre_lat/lon`` or the CSV's ``center_lat/lon``)."""
    for a, b in (("centre_lat", "centre_lon"), ("center_lat", "center_lon")):
        if a in db_frame.columns and b in db_frame.columns:
            return db_frame[a].to_numpy(np.float64), db_frame[b].to_numpy(np.float64)
    raise InputError("DB table", "needs centre_lat/centre_lon (or center_lat/center_lon) columns")


def select_db_mask(db_frame: pd.DataFrame, area: str | tuple[float, float], radius_km: float = DB_RADIUS_KM) -> np.ndarray:
    """Bool mask over ``db_frame`` rows whose footprint centre is < ``radius_km`` from the area centre."""
    lat0, lon0 = area_centre(area)
    lat, lon = db_centres(db_frame)
    return np.asarray(haversine_km(lat0, lon0, lat, lon) < radius_km)


def select_db(db_frame: pd.DataFrame, area: str | tuple[float, float], radius_km: float = DB_RADIUS_KM) -> pd.DataFrame:
    """The DB rows of an area (index preserved). Filter the 2021 year first when the table holds several."""
    return db_frame[select_db_mask(db_frame, area, radius_km)]


# --- positives ---------------------------------------------------------------------------------
def db_corners(db_frame: pd.DataFrame) -> np.ndarray:
    """``(N, 4, 2)`` corners (lat, lon) of a DB table, official order LL, UL, UR, LR."""
    missing = [c for c in CORNER_COLUMNS if c not in db_frame.columns]
    if missing:
        raise InputError("DB table", f"lacks corner columns {missing}")
    return db_frame[list(CORNER_COLUMNS)].to_numpy(np.float64).reshape(-1, 4, 2)


def _laea(lat0: float, lon0: float) -> pyproj.Transformer:
    return pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=laea +lat_0={lat0} +lon_0={lon0} +ellps=WGS84"
    )


class DbFootprints:
    """DB footprints prepared for many overlap queries: ``corners`` ``(N, 4, 2)`` (lat, lon), plus each
    footprint's centre and circumradius (km) so that a photo only meets the DB images near it."""

    def __init__(self, corners: np.ndarray):
        self.corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
        lat, lon = self.corners[..., 0], self.corners[..., 1]
        self.lat, self.lon = lat.mean(axis=1), _mean_lon(lon)
        self.radius_km = np.max(haversine_km(self.lat[:, None], self.lon[:, None], lat, lon), axis=1, initial=0.0)
        self.max_radius_km = float(self.radius_km.max(initial=0.0))

    def __len__(self) -> int:
        return len(self.corners)

    def overlaps(self, photo_footprint: Footprint, margin_km: float = 50.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, intersection_km2, iou)`` for the DB rows that can touch the photo (centre distance
        below the sum of circumradii + ``margin_km``); every other row has zero overlap."""
        plat, plon = photo_footprint.lats, photo_footprint.lons
        clat, clon = float(plat.mean()), float((plon.mean() + 180) % 360 - 180)
        r_photo = float(np.max(haversine_km(clat, clon, plat, plon)))
        dist = haversine_km(clat, clon, self.lat, self.lon)
        rows = np.flatnonzero(dist < r_photo + self.radius_km + margin_km)
        if len(rows) == 0:
            return rows, np.zeros(0), np.zeros(0)
        proj = _laea(clat, clon)
        px, py = proj.transform(plon, plat)
        photo = shapely.make_valid(shapely.Polygon(np.c_[px, py]))
        x, y = proj.transform(self.corners[rows, :, 1].ravel(), self.corners[rows, :, 0].ravel())
        tiles = shapely.polygons(np.stack([np.reshape(x, (-1, 4)), np.reshape(y, (-1, 4))], axis=-1))
        inter = shapely.area(shapely.intersection(tiles, photo))
        union = shapely.area(tiles) + photo.area - inter
        return rows, inter / 1e6, np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def overlaps(photo_footprint: Footprint, corners: np.ndarray | DbFootprints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection (km²) and IoU of one photo footprint with many DB footprints; see :class:`DbFootprints`."""
    db = corners if isinstance(corners, DbFootprints) else DbFootprints(corners)
    return db.overlaps(photo_footprint)


def _mean_lon(lons: np.ndarray) -> np.ndarray:
    """Mean longitude per row, unwrapped around the row's first corner (antimeridian-safe)."""
    ref = lons[:, :1]
    un = ref + (lons - ref + 180.0) % 360.0 - 180.0
    return (un.mean(axis=1) + 180.0) % 360.0 - 180.0


def positives_by_footprint(
    photo_footprint: Footprint, db_frame: pd.DataFrame | np.ndarray | DbFootprints, min_iou: float = 0.0
) -> np.ndarray:
    """Row positions (0-based, into ``db_frame``) of DB images overlapping the photo footprint.

    ``min_iou = 0`` (official): any intersection of positive area. ``min_iou > 0``: IoU >= min_iou
    (the authors' 0.25 / 0.50 lists). ``db_frame`` may also be an ``(N, 4, 2)`` corner array or a
    prepared :class:`DbFootprints` (much faster for many photos).
    """
    corners = db_frame if isinstance(db_frame, (np.ndarray, DbFootprints)) else db_corners(db_frame)
    rows, inter, iou = overlaps(photo_footprint, corners)
    keep = inter > 0 if min_iou <= 0 else iou >= min_iou
    return np.sort(rows[keep])


# --- the test set of one area ------------------------------------------------------------------
@dataclass(frozen=True)
class AreaSet:
    """One area's queries after the official drop rule.

    ``photos`` the kept queries; ``positives[i]`` row positions (into the *whole* DB table) of the
    positives of ``photos[i]``; ``db_rows`` positions of the area's DB subset. Counts say why photos
    were lost: outside the radius, no footprint, no positive, a positive outside the subset.
    """

    area: str
    centre: tuple[float, float]
    photos: tuple[Photo, ...]
    positives: tuple[np.ndarray, ...] = field(repr=False)
    db_rows: np.ndarray = field(repr=False)
    n_selected: int = 0
    n_no_footprint: int = 0
    n_no_positive: int = 0
    n_positive_outside: int = 0


def build_area_set(
    photos: Sequence[Photo],
    db_frame: pd.DataFrame,
    area: str | tuple[float, float],
    photo_radius_km: float = PHOTO_RADIUS_KM,
    db_radius_km: float = DB_RADIUS_KM,
    min_iou: float = 0.0,
) -> AreaSet:
    """Select an area's photos and DB images, compute positives, apply the official drop rule."""
    centre = area_centre(area)
    selected = select_photos(photos, centre, photo_radius_km)
    in_subset = select_db_mask(db_frame, centre, db_radius_km)
    corners = DbFootprints(db_corners(db_frame))
    kept, pos, n_nofp, n_nopos, n_out = [], [], 0, 0, 0
    for p in selected:
        if p.footprint is None:
            n_nofp += 1
            continue
        rows = positives_by_footprint(p.footprint, corners, min_iou)
        if len(rows) == 0:
            n_nopos += 1
        elif not in_subset[rows].all():
            n_out += 1
        else:
            kept.append(p)
            pos.append(rows)
    name = area if isinstance(area, str) else f"{centre[0]:g},{centre[1]:g}"
    return AreaSet(name, centre, tuple(kept), tuple(pos), np.flatnonzero(in_subset), len(selected), n_nofp, n_nopos, n_out)


# --- recall ------------------------------------------------------------------------------------
def recall_at(ranked_hits: np.ndarray, ns: Iterable[int] = RECALL_NS) -> dict[int, float]:
    """R@N in percent: share of queries (rows of the ``(Q, K)`` bool array) with a hit among the first N.

    N larger than K counts the K available slots. Q = 0 gives 0.0 for every N.
    """
    hits = np.asarray(ranked_hits, dtype=bool)
    if hits.ndim != 2:
        raise ValueError(f"ranked_hits must be (Q, K), got shape {hits.shape}")
    if hits.shape[0] == 0:
        return {int(n): 0.0 for n in ns}
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {int(n): float(100.0 * np.mean(first < n)) for n in ns}


# --- loading for the CLI -----------------------------------------------------------------------
def load_db_table(source: Path | str) -> pd.DataFrame:
    """A DB table from a CSV shaped like ``earthloc_meta/db_tiles_2021.csv`` or a DB folder
    (``manifest.parquet`` or the official layout, via :func:`earthloc.db.manifest.load`)."""
    source = Path(source)
    if source.is_dir():
        return load(source)
    if not source.is_file():
        raise InputError(source, "no such file or folder")
    try:
        frame = pd.read_csv(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise InputError(source, f"unreadable CSV ({type(err).__name__})") from None
    frame = frame.rename(columns={"center_lat": "centre_lat", "center_lon": "centre_lon"})
    need = [*CORNER_COLUMNS, "centre_lat", "centre_lon"]
    if missing := [c for c in need if c not in frame.columns]:
        raise InputError(source, f"missing columns {missing}")
    values = frame[need].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    lats = values[:, [0, 2, 4, 6, 8]]
    bad |= (np.abs(lats) > 90).any(axis=1) | (np.abs(values[:, [1, 3, 5, 7, 9]]) > 180).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}: row {i + 2}", "corner/centre is not a number or outside lat/lon range")
    frame[need] = values
    return frame


def db_for_year(db_frame: pd.DataFrame, year: int | None = None) -> tuple[pd.DataFrame, int | None]:
    """The rows of one DB year: ``year``, else 2021 (the official test year) when present, else the
    latest. Tables without a ``year`` column are returned whole (year None)."""
    if "year" not in db_frame.columns or len(db_frame) == 0:
        return db_frame, year
    years = sorted(int(y) for y in db_frame["year"].unique())
    pick = year if year is not None else (2021 if 2021 in years else years[-1])
    if pick not in years:
        raise InputError("year", f"no DB images of {pick}; the DB has {years}")
    return db_frame[db_frame["year"].to_numpy() == pick], pick

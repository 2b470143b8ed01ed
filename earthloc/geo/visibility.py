"""What the ISS can see: the visible disk around its nadir, and its nadir/altitude from TLEs.

* :func:`horizon_radius_km`: ground distance (great circle, R = 6371 km) from the nadir to the edge
  of the visible disk, at the geometric horizon or at a maximum camera off-nadir angle.
* :func:`iss_state`: ISS sub-satellite point (WGS84 geodetic) and height at a UTC time, propagated
  with SGP4 (``sgp4``; UT1 and GMST from ``skyfield``; geodetic from ``pyproj``) from the TLE closest
  in epoch in the packaged TLE history (49,359 TLEs 1998-2024, not chronological: sorted once, cached)
  or in ``$EARTHLOC_TLE``, a newer file.
* :func:`ground_track` / :func:`closest_track_point` / :func:`time_from_nadir`: where on a UTC day's
  ground track a nadir lies (recovers the exposure time of a photo known by its date and nadir).
* :func:`in_visible_disk`: which points (e.g. DB image centres) lie in the disk.
"""

from __future__ import annotations

import gzip
import lzma
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyproj
from skyfield.api import EarthSatellite, load
from skyfield.sgp4lib import theta_GMST1982

from earthloc.errors import InputError
from earthloc.geo.footprint import EARTH_RADIUS_KM, haversine_km

# Mean ISS height above the WGS84 ellipsoid over 2001-2023 from the TLE history is ~400 km (it ranged
# ~330-425 km, lowest around 2008-2011); 415 km is the typical 2011-2023 value.
DEFAULT_ISS_ALTITUDE_KM = 415.0
# Farthest a TLE may be from the requested time before we refuse (TLE accuracy decays ~1-3 km/day).
MAX_TLE_AGE = timedelta(days=14)
_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)


# --- visible disk ------------------------------------------------------------------------------
def horizon_radius_km(altitude_km: float | np.ndarray, max_off_nadir_deg: float | None = None) -> float | np.ndarray:
    """Ground distance (km, along the sphere R = 6371 km) from the nadir to the edge of the visible disk.

    Without ``max_off_nadir_deg``: the geometric horizon, ``R * arccos(R / (R + h))`` (2,260 km at
    415 km). With it, the disk seen within that angle from nadir at the spacecraft: the Earth-central
    angle is ``asin((R + h)/R * sin(eta)) - eta`` (capped at the horizon). No refraction.
    """
    h = np.asarray(altitude_km, dtype=np.float64)
    if np.any(~np.isfinite(h)) or np.any(h <= 0):
        raise InputError("altitude_km", f"must be a positive number, got {altitude_km}")
    r = EARTH_RADIUS_KM
    horizon = np.arccos(r / (r + h))
    if max_off_nadir_deg is None:
        lam = horizon
    else:
        if not 0 <= max_off_nadir_deg <= 90:
            raise InputError("max_off_nadir_deg", f"must be in [0, 90], got {max_off_nadir_deg}")
        eta = math.radians(max_off_nadir_deg)
        s = (r + h) / r * math.sin(eta)
        lam = np.where(s >= 1, horizon, np.arcsin(np.minimum(s, 1.0)) - eta)
        lam = np.minimum(lam, horizon)
    out = r * lam
    return float(out) if np.ndim(out) == 0 else out


def in_visible_disk(nadir: tuple[float, float] | None, altitude_km: float | None, lats, lons,
                    max_off_nadir_deg: float | None = None) -> np.ndarray:
    """Bool array: whether each (lat, lon) (degrees) lies within the area visible from the ISS at
    ``nadir``: the disk of :func:`horizon_radius_km` on the sphere (altitude None: the default ISS
    altitude). ``nadir`` None (unknown): every point may be visible (all True).

    The one visible-area test of the package (the index search's :func:`earthloc.locate.disk_mask`
    is its faster form over an index and gives the same answer)."""
    if nadir is None:
        return np.ones(np.shape(np.asarray(lats, float)), dtype=bool)
    alt = DEFAULT_ISS_ALTITUDE_KM if altitude_km is None else altitude_km
    radius = horizon_radius_km(alt, max_off_nadir_deg)
    return np.asarray(haversine_km(nadir[0], nadir[1], np.asarray(lats, float), np.asarray(lons, float)) <= radius)


# --- TLEs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IssState:
    """ISS sub-satellite point (WGS84 geodetic degrees), height above the ellipsoid (km), and the
    epoch of the TLE used."""

    lat: float
    lon: float
    altitude_km: float
    tle_epoch: datetime


@dataclass(frozen=True)
class _Tles:
    epochs: np.ndarray  # (N,) POSIX seconds, sorted
    lines: tuple[tuple[str, str], ...]


def _tle_epoch_s(line1: str) -> float:
    """POSIX seconds of a TLE line-1 epoch field ``YYDDD.DDDDDDDD`` (columns 19-32)."""
    yy, doy = int(line1[18:20]), float(line1[20:32])
    year = 2000 + yy if yy < 57 else 1900 + yy
    return (datetime(year, 1, 1, tzinfo=UTC) - _EPOCH0).total_seconds() + (doy - 1.0) * 86400.0


TLE_ENV = "EARTHLOC_TLE"
# The ISS TLE history that comes with earthloc (from the astro-pi-replay 1.4.3 wheel, BSD-3-Clause, its
# licence beside it; tools/vendor_iss_tle.py makes it): 49,359 TLEs 1998-11-20 .. 2024-09-09.
PACKAGED_TLE = Path(__file__).resolve().parent / "data" / "iss_tle.txt.xz"


def default_tle_path() -> Path:
    """``$EARTHLOC_TLE`` (a newer TLE file: plain text, .gz or .xz) if set, else the packaged history."""
    env = os.environ.get(TLE_ENV)
    return Path(env).expanduser() if env else PACKAGED_TLE


def _read_text(path: Path) -> str:
    if path.suffix == ".xz":
        with lzma.open(path, "rt", encoding="ascii") as f:
            return f.read()
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="ascii") as f:
            return f.read()
    return path.read_text(encoding="ascii")


def load_tles(path: Path | str | None = None) -> _Tles:
    """Parse a TLE file (2-line or 3-line with names; plain, .gz or .xz) once; entries sorted by epoch.
    Default: :func:`default_tle_path`."""
    return _load_tles(Path(path) if path is not None else default_tle_path())


@lru_cache(maxsize=4)
def _load_tles(path: Path) -> _Tles:
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError, EOFError, lzma.LZMAError) as err:
        hint = f" (set {TLE_ENV} to a readable TLE file)" if os.environ.get(TLE_ENV) else ""
        raise InputError(path, f"cannot read TLE file ({type(err).__name__}){hint}") from None
    rows = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    pairs = []
    i = 0
    while i < len(rows):
        if rows[i].startswith("1 ") and i + 1 < len(rows) and rows[i + 1].startswith("2 "):
            pairs.append((rows[i], rows[i + 1]))
            i += 2
        elif not rows[i].startswith(("1 ", "2 ")):  # a name line (3-line format)
            i += 1
        else:
            raise InputError(f"{path}: line {i + 1}", "TLE line 1 without its line 2")
    if not pairs:
        raise InputError(path, "no two-line element sets found")
    try:
        epochs = np.array([_tle_epoch_s(a) for a, _ in pairs])
    except ValueError:
        raise InputError(path, "malformed TLE epoch field") from None
    order = np.argsort(epochs, kind="stable")
    return _Tles(epochs[order], tuple(pairs[i] for i in order))


@lru_cache(maxsize=1)
def _timescale():
    return load.timescale(builtin=True)  # bundled leap seconds / Delta T: no download


@lru_cache(maxsize=256)
def _satellite(line1: str, line2: str):
    return EarthSatellite(line1, line2, ts=_timescale())


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _nearest_indices(tles: _Tles, seconds: np.ndarray) -> np.ndarray:
    """Index of the TLE nearest in epoch to each POSIX time; InputError when one is too far."""
    t = np.atleast_1d(np.asarray(seconds, dtype=np.float64))
    j = np.clip(np.searchsorted(tles.epochs, t), 1, len(tles.epochs) - 1) if len(tles.epochs) > 1 else np.zeros(len(t), int)
    k = np.where(np.abs(tles.epochs[j - 1] - t) <= np.abs(tles.epochs[j] - t), j - 1, j) if len(tles.epochs) > 1 else j
    worst = int(np.argmax(np.abs(tles.epochs[k] - t)))
    if abs(tles.epochs[k[worst]] - t[worst]) > MAX_TLE_AGE.total_seconds():
        first, last = (_EPOCH0 + timedelta(seconds=float(tles.epochs[i])) for i in (0, -1))
        when = _EPOCH0 + timedelta(seconds=float(t[worst]))
        raise InputError(when.isoformat(), f"no ISS TLE within {MAX_TLE_AGE.days} days (TLEs cover "
                                           f"{first:%Y-%m-%d} to {last:%Y-%m-%d})")
    return k


def nearest_tle(when: datetime, tle_path: Path | str | None = None) -> tuple[str, str, datetime]:
    """The TLE closest in epoch to ``when`` (UTC; naive = UTC): ``(line1, line2, epoch)``."""
    tles = load_tles(tle_path)
    k = int(_nearest_indices(tles, np.array([(_utc(when) - _EPOCH0).total_seconds()]))[0])
    return (*tles.lines[k], _EPOCH0 + timedelta(seconds=float(tles.epochs[k])))


_ECEF_TO_WGS84 = None


def _propagate(line1: str, line2: str, start: datetime, offsets_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geodetic lat, lon (deg) and height (km) at ``start`` (UTC) + ``offsets_s`` seconds, one TLE.

    SGP4 gives TEME positions; TEME -> Earth-fixed is the rotation by GMST (IAU 1982, the frame's own
    definition, evaluated at UT1 from skyfield's bundled tables; polar motion, < 15 m, ignored); the
    WGS84 geodetic conversion is pyproj's (EPSG:4978 -> EPSG:4979). Times are built from ``start``'s
    calendar fields plus seconds, so leap seconds are not counted twice (POSIX seconds ignore them).
    """
    global _ECEF_TO_WGS84

    start = _utc(start)
    sec = start.second + start.microsecond / 1e6 + np.asarray(offsets_s, dtype=np.float64)
    t = _timescale().utc(start.year, start.month, start.day, start.hour, start.minute, sec)
    sat = _satellite(line1, line2).model
    err, r, _ = sat.sgp4_array(np.atleast_1d(t.whole), np.atleast_1d(t.tai_fraction - t._leap_seconds() / 86400.0))
    if np.any(err):
        raise InputError(f"TLE {line1[18:32]}", f"SGP4 failed at {start.isoformat()} (error {int(np.max(err))})")
    theta, _ = theta_GMST1982(np.atleast_1d(t.whole), np.atleast_1d(t.ut1_fraction))
    c, s = np.cos(theta), np.sin(theta)
    x, y, z = r[:, 0] * c + r[:, 1] * s, -r[:, 0] * s + r[:, 1] * c, r[:, 2]  # rotate TEME by -GMST about z
    if _ECEF_TO_WGS84 is None:
        _ECEF_TO_WGS84 = pyproj.Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
    lon, lat, h = _ECEF_TO_WGS84.transform(x * 1000.0, y * 1000.0, z * 1000.0)
    return np.asarray(lat), np.asarray(lon), np.asarray(h) / 1000.0


# A nadir and an exposure time given together must name the same place: 150 km is ~20 s of the ISS
# ground track (7.2 km/s), well above TLE error (a few km per day of age) and NASA's 0.1-degree rounding.
NADIR_TIME_TOLERANCE_KM = 150.0


def check_nadir_time(nadir: tuple[float, float], when: datetime, where: object) -> None:
    """InputError naming ``where`` when ``nadir`` (lat, lon degrees) is farther than
    :data:`NADIR_TIME_TOLERANCE_KM` (on the WGS84 ellipsoid) from the ISS nadir at ``when``."""
    state = iss_state(when)
    km = pyproj.Geod(ellps="WGS84").inv(nadir[1], nadir[0], state.lon, state.lat)[2] / 1000
    if km > NADIR_TIME_TOLERANCE_KM:
        raise InputError(where, f"nadir {nadir[0]},{nadir[1]} is {km:,.0f} km from the ISS nadir at time "
                                f"{_utc(when).isoformat()} ({state.lat:.2f},{state.lon:.2f}; tolerance "
                                f"{NADIR_TIME_TOLERANCE_KM:.0f} km): give the one you trust")


def iss_state(when: datetime, tle_path: Path | str | None = None) -> IssState:
    """ISS nadir (WGS84 geodetic lat/lon, degrees) and height (km) at UTC ``when`` (naive = UTC)."""
    l1, l2, epoch = nearest_tle(when, tle_path)
    lat, lon, h = _propagate(l1, l2, when, np.zeros(1))
    return IssState(float(lat[0]), float(lon[0]), float(h[0]), epoch)


# --- ground tracks -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTrack:
    """ISS ground track sampled every ``step_s`` seconds: POSIX ``seconds`` and geodetic ``lat``,
    ``lon`` (deg), ``altitude_km``, all ``(T,)``. Each sample uses the TLE nearest its own time (as
    :func:`iss_state` does), so a track and single states agree; ``tle_epochs`` lists those used."""

    seconds: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    altitude_km: np.ndarray
    tle_epochs: tuple[datetime, ...]


def ground_track(start: datetime, end: datetime, step_s: float = 10.0, tle_path: Path | str | None = None) -> GroundTrack:
    """The ISS ground track between two UTC times."""
    a, b = (_utc(start) - _EPOCH0).total_seconds(), (_utc(end) - _EPOCH0).total_seconds()
    if not b > a:
        raise InputError(f"{start}..{end}", "end must be after start")
    tles = load_tles(tle_path)
    offsets = np.arange(0.0, b - a + step_s, step_s)
    which = _nearest_indices(tles, a + offsets)
    lat, lon, h = (np.empty(len(offsets)) for _ in range(3))
    for k in np.unique(which):
        sel = which == k
        line1, line2 = tles.lines[k]
        lat[sel], lon[sel], h[sel] = _propagate(line1, line2, start, offsets[sel])
    epochs = tuple(_EPOCH0 + timedelta(seconds=float(tles.epochs[k])) for k in np.unique(which))
    return GroundTrack(a + offsets, lat, lon, h, epochs)


def _unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p, q = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(p) * np.cos(q), np.cos(p) * np.sin(q), np.sin(p)], axis=-1)


def closest_track_point(track: GroundTrack, lats, lons) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For points ``(lats, lons)`` (Q,): distance (km) to the nearest point of the sampled ground track,
    the UTC time there (POSIX seconds) and the ISS height there (km).

    Each track segment (one ``step_s``) is treated as a straight chord between unit vectors; at a 10 s
    step (77 km of ground) that is accurate to well under 1 km.
    """
    q = _unit(np.asarray(lats, float), np.asarray(lons, float))  # (Q, 3)
    p = _unit(track.lat, track.lon)  # (T, 3)
    a, d = p[:-1], p[1:] - p[:-1]  # (S, 3)
    dd = np.maximum(np.einsum("sk,sk->s", d, d), 1e-18)
    t = np.clip(np.einsum("qsk,sk->qs", q[:, None, :] - a[None], d) / dd, 0.0, 1.0)  # (Q, S)
    foot = a[None] + t[..., None] * d[None]
    dist = np.linalg.norm(q[:, None, :] - foot, axis=-1)  # chord on the unit sphere
    j = dist.argmin(axis=1)
    tj = t[np.arange(len(q)), j]
    chord = dist[np.arange(len(q)), j]
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    sec = track.seconds[j] + tj * (track.seconds[j + 1] - track.seconds[j])
    alt = track.altitude_km[j] + tj * (track.altitude_km[j + 1] - track.altitude_km[j])
    return km, sec, alt


@dataclass(frozen=True)
class TrackFix:
    """Where a nadir lies on a UTC day's ground track: the exposure ``time`` it implies, the ISS
    ``altitude_km`` then, and ``distance_km`` from the nadir to the track (a few km when consistent)."""

    time: datetime
    altitude_km: float
    distance_km: float


def time_from_nadir(nadir: tuple[float, float], day: datetime, tle_path: Path | str | None = None,
                    step_s: float = 10.0) -> TrackFix:
    """Recover the exposure time of a photo known only by its date (UTC day) and its nadir (degrees).

    The ISS passes a given nadir at most a few times a day; the closest pass wins. A ``distance_km`` of
    more than ~30 km means the nadir does not fit that day (on real metadata: median 2.3 km).
    """
    day = _utc(day).replace(hour=0, minute=0, second=0, microsecond=0)
    track = ground_track(day, day + timedelta(days=1), step_s, tle_path)
    km, sec, alt = closest_track_point(track, [nadir[0]], [nadir[1]])
    return TrackFix(_EPOCH0 + timedelta(seconds=float(sec[0])), float(alt[0]), float(km[0]))

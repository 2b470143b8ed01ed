"""Official file names: EarthLoc DB images, EarthLoc photos, EarthMatch photos.

EarthLoc names are ``@``-joined fields with an empty first field and ``.jpg`` last::

    @lat1@lon1@lat2@lon2@lat3@lon3@lat4@lon4@image_id@time@lat@lon@area_km2@orientation@.jpg

* DB image: corners LL, UL, UR, LR with 5 decimals, id ``ZZ_RRRR_CCCC``, time = year, then the
  lat/lon box centre (5 decimals), the area (integer km²) and orientation ``0``. Stored under
  ``database/{year}_{zoom:02d}/{round(lat,-1)}_{round(lon,-1)}/``.
* Photo: footprint corners with 6 decimals, id = mission-roll-frame (``ISS063-E-38464``), time =
  ``YYYYMMDD``, then the ISS nadir (1 decimal), the area (integer km²) and the orientation in degrees
  with 1 decimal and *no leading zero* below 1 (``.9``, ``-.8``, ``.0``: measured on all 17,752 names).
* EarthMatch photo: ``@centre_lat@centre_lon@nadir_lat@nadir_lon@tilt@focal_mm@cloud_pct@MRF@``
  (lat/lon with 1 decimal; tilt, focal length and cloud % integers; tilt ``0`` means NASA's "LO").

Formatting reproduces every real name byte for byte (tests/geo/test_names.py). Any malformed name
raises :class:`~earthloc.errors.InputError` naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from os import PathLike
from pathlib import Path, PurePath

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock

# Official areas (DB images and photos alike) are polygon areas in a cylindrical equal-area projection
# of a sphere of the WGS84 equatorial radius, truncated to an integer: reproduces 97.7% of the 8,475
# real DB names and 99.6% of the 17,752 photo names exactly, all within 1 km² (see docs/geo.md).
# Our own Footprint.area_km2 is WGS84-geodesic instead (up to 0.67% apart).
OFFICIAL_AREA_RADIUS_KM = 6378.137

_TILE_RE = re.compile(r"^\d{1,2}_\d{4,}_\d{4,}$")
_MRF_RE = re.compile(r"^[A-Za-z0-9]+-[A-Za-z]+-\d+$")
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", "")


# --- number parsing / formatting ---------------------------------------------------------------
def parse_number(text: str, what: str, name: str) -> float:
    """``text`` as a finite float; otherwise InputError naming ``name`` (the file/row) and ``what``."""
    try:
        v = float(text)
    except ValueError:
        raise InputError(name, f"{what} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise InputError(name, f"{what} is not a finite number: {text!r}")
    return v


def _lat(text: str, what: str, name: str) -> float:
    v = parse_number(text, what, name)
    if not -90 <= v <= 90:
        raise InputError(name, f"{what} {v} outside [-90, 90]")
    return v


def _lon(text: str, what: str, name: str) -> float:
    v = parse_number(text, what, name)
    if not -180 <= v <= 180:
        raise InputError(name, f"{what} {v} outside [-180, 180]")
    return v


def _int(text: str, what: str, name: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise InputError(name, f"{what} is not an integer: {text!r}")
    return int(text)


def _orientation_text(deg: float) -> str:
    """1 decimal, leading zero dropped for |deg| < 1 (``.9``, ``-.8``), as in the official photo names."""
    s = f"{deg:.1f}"
    if s.startswith("0."):
        return s[1:]
    if s.startswith("-0."):
        return "-" + s[2:]
    return s


def _basename(text: str) -> str:
    """The last path component (names never contain '/'; EarthMatch folder names may end with '/')."""
    return text.replace("\\", "/").rstrip("/").split("/")[-1]


def _split(name_or_path: str | PurePath, n_fields: tuple[int, ...]) -> tuple[str, list[str], str]:
    """Split an ``@`` name (path allowed) into its inner fields; return (basename, fields, extension)."""
    text = str(name_or_path)
    base = _basename(text)
    parts = base.split("@")
    if len(parts) < 3 or parts[0] != "":
        raise InputError(text, "not an official name: must start with '@' and have '@'-separated fields")
    ext = parts[-1]
    if ext.lower() not in _EXTENSIONS:
        raise InputError(text, f"unexpected extension {ext!r} after the last '@'")
    fields = parts[1:-1]
    if len(fields) not in n_fields:
        want = " or ".join(str(n) for n in n_fields)
        raise InputError(text, f"expected {want} '@'-separated fields, got {len(fields)}")
    return text, fields, ext


def _corners(fields: list[str], name: str) -> tuple[tuple[float, float], ...]:
    return tuple(
        (_lat(fields[2 * i], f"corner {i + 1} latitude", name), _lon(fields[2 * i + 1], f"corner {i + 1} longitude", name))
        for i in range(4)
    )


def official_area_km2(shape: TileBlock | Footprint | tuple) -> int:
    """The integer area (km²) the official code writes into names, for a DB tile (from its 5-decimal
    corners) or a photo footprint / corner tuple: the shoelace area in (lon, sin lat) radians on a
    sphere of radius 6378.137 km, truncated. Not a true area: use ``Footprint.area_km2`` for that."""
    corners: Sequence[tuple[float, float]]
    if isinstance(shape, TileBlock):
        corners = [(round(a, 5), round(b, 5)) for a, b in shape.corners]
    else:
        corners = shape.corners if isinstance(shape, Footprint) else shape
    x = [math.radians(lon) for _, lon in corners]
    y = [math.sin(math.radians(lat)) for lat, _ in corners]
    n = len(corners)
    twice = sum(x[i] * y[(i + 1) % n] - x[(i + 1) % n] * y[i] for i in range(n))
    return int(abs(twice) / 2 * OFFICIAL_AREA_RADIUS_KM**2)


def _round10(v: float) -> int:
    """Python's ``round(v, -1)`` as an int (banker's rounding on the decimal value, like the official code)."""
    return int(round(v, -1))


# --- DB images ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DbImageName:
    """An official DB image name. ``corners`` (lat, lon) in order LL, UL, UR, LR; ``centre`` (lat, lon)
    as stored (the lat/lon box midpoint, not the Mercator centre); ``area_km2`` as stored."""

    tile: TileBlock
    year: int
    corners: tuple[tuple[float, float], ...]
    centre: tuple[float, float]
    area_km2: int
    orientation: int = 0

    @classmethod
    def for_tile(cls, tile: TileBlock, year: int) -> DbImageName:
        """The name the official pipeline gives ``tile`` in ``year``."""
        return cls(tile, int(year), tile.corners, tile.lonlat_box_centre, official_area_km2(tile), 0)

    @property
    def footprint(self) -> Footprint:
        """The DB image's footprint (its 4 corners, degrees)."""
        return Footprint(self.corners)

    @property
    def filename(self) -> str:
        """``@...@.jpg``: 5-decimal corners and centre, as in the official DB."""
        f = [f"{v:.5f}" for c in self.corners for v in c]
        f += [self.tile.name, str(self.year), f"{self.centre[0]:.5f}", f"{self.centre[1]:.5f}"]
        f += [str(self.area_km2), str(self.orientation)]
        return "@" + "@".join(f) + "@.jpg"

    @property
    def folder(self) -> str:
        """``database/{year}_{zoom:02d}/{round(lat,-1)}_{round(lon,-1)}`` from the stored (5-decimal) centre."""
        lat, lon = (float(f"{v:.5f}") for v in self.centre)
        return f"database/{self.year}_{self.tile.zoom:02d}/{_round10(lat)}_{_round10(lon)}"

    @property
    def relpath(self) -> str:
        """``<folder>/<file name>``, the image's path inside an official DB folder."""
        return f"{self.folder}/{self.filename}"


def parse_db_name(name_or_path: str | PurePath) -> DbImageName:
    """Parse an official DB image name or a path ending in one (the file name is authoritative)."""
    text, f, _ = _split(name_or_path, (14,))
    if not _TILE_RE.match(f[8]):
        raise InputError(text, f"image id {f[8]!r} is not a tile id ZZ_RRRR_CCCC")
    year = _int(f[9], "year", text)
    if not 1900 <= year <= 2100 or len(f[9]) != 4:
        raise InputError(text, f"year {f[9]!r} is not a 4-digit year")
    return DbImageName(
        tile=TileBlock.from_name(f[8]),
        year=year,
        corners=_corners(f, text),
        centre=(_lat(f[10], "centre latitude", text), _lon(f[11], "centre longitude", text)),
        area_km2=_int(f[12], "area", text),
        orientation=_int(f[13], "orientation", text),
    )


# --- EarthLoc photos ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoName:
    """An official EarthLoc photo name: footprint ``corners`` (lat, lon) x4, ``mrf``, ``date``, ISS ``nadir``
    (lat, lon), ``area_km2`` (as labelled by NASA/EarthLoc) and ``orientation`` (degrees)."""

    corners: tuple[tuple[float, float], ...]
    mrf: str
    date: date
    nadir: tuple[float, float]
    area_km2: int
    orientation: float

    @property
    def footprint(self) -> Footprint:
        """The photo's footprint (its 4 corners as NASA gives them, degrees)."""
        return Footprint(self.corners)

    @property
    def filename(self) -> str:
        """The official query file name: 6-decimal corners, MRF, date, nadir, area (km²), orientation."""
        f = [f"{v:.6f}" for c in self.corners for v in c]
        f += [self.mrf, self.date.strftime("%Y%m%d"), f"{self.nadir[0]:.1f}", f"{self.nadir[1]:.1f}"]
        f += [str(self.area_km2), _orientation_text(self.orientation)]
        return "@" + "@".join(f) + "@.jpg"


def _date(text: str, name: str) -> date:
    if not re.fullmatch(r"\d{8}", text):
        raise InputError(name, f"date {text!r} is not YYYYMMDD")
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise InputError(name, f"date {text!r} is not a valid YYYYMMDD date") from None


def _mrf(text: str, name: str) -> str:
    if not _MRF_RE.match(text):
        raise InputError(name, f"photo id {text!r} is not a mission-roll-frame like ISS063-E-38464")
    return text


def parse_photo_name(name_or_path: str | PurePath) -> PhotoName:
    """Parse an official EarthLoc photo name (or a path ending in one)."""
    text, f, _ = _split(name_or_path, (14,))
    return PhotoName(
        corners=_corners(f, text),
        mrf=_mrf(f[8], text),
        date=_date(f[9], text),
        nadir=(_lat(f[10], "nadir latitude", text), _lon(f[11], "nadir longitude", text)),
        area_km2=_int(f[12], "area", text),
        orientation=parse_number(f[13], "orientation", text),
    )


# --- EarthMatch photos --------------------------------------------------------------------------
@dataclass(frozen=True)
class EarthMatchName:
    """An EarthMatch photo name: NASA ``centre`` and ISS ``nadir`` (lat, lon, 0.1 deg), camera ``tilt``
    (degrees off nadir; ``0`` stands for NASA's "LO", low oblique, angle unknown), lens ``focal_mm``,
    ``cloud_pct`` and ``mrf``. ``extension`` is what followed the last ``@`` ("" for folder names)."""

    centre: tuple[float, float]
    nadir: tuple[float, float]
    tilt: int
    focal_mm: int
    cloud_pct: int
    mrf: str
    extension: str = ".jpg"

    @property
    def filename(self) -> str:
        """The EarthMatch file name: centre, nadir (1 decimal), tilt, focal length (mm), cloud %, MRF."""
        f = [f"{self.centre[0]:.1f}", f"{self.centre[1]:.1f}", f"{self.nadir[0]:.1f}", f"{self.nadir[1]:.1f}"]
        f += [str(self.tilt), str(self.focal_mm), str(self.cloud_pct), self.mrf]
        return "@" + "@".join(f) + "@" + self.extension


def parse_earthmatch_name(name_or_path: str | PurePath) -> EarthMatchName:
    """Parse an EarthMatch photo (or query-folder) name."""
    text, f, ext = _split(name_or_path, (8,))
    return EarthMatchName(
        centre=(_lat(f[0], "centre latitude", text), _lon(f[1], "centre longitude", text)),
        nadir=(_lat(f[2], "nadir latitude", text), _lon(f[3], "nadir longitude", text)),
        tilt=_int(f[4], "tilt", text),
        focal_mm=_int(f[5], "focal length", text),
        cloud_pct=_int(f[6], "cloud %", text),
        mrf=_mrf(f[7], text),
        extension=ext,
    )


def parse_any_name(name_or_path: str | PurePath) -> DbImageName | PhotoName | EarthMatchName:
    """Parse whichever official name this is: DB image (tile id), EarthLoc photo, or EarthMatch photo."""
    text = str(name_or_path)
    base = _basename(text)
    n = base.count("@")
    if n == 9:
        return parse_earthmatch_name(text)
    if n == 15:
        parts = base.split("@")
        return parse_db_name(text) if _TILE_RE.match(parts[9]) else parse_photo_name(text)
    raise InputError(text, f"not an official name: {max(n - 1, 0)} '@'-separated fields (expected 14 or 8)")


def is_official_name(name: str) -> bool:
    """Does this file name claim to be an ``@``-joined official name (starts with '@', has >= 3 '@')?
    Such names are parsed strictly: a wrong field count is an error, not a plain file name."""
    base = _basename(name)
    return base.startswith("@") and base.count("@") >= 3


def scan_db_folder(db_dir: str | PathLike[str]) -> list[tuple[DbImageName, str]]:
    """The DB images of an official-layout folder: ``(name, path relative to db_dir)`` for every
    ``database/*/*/*.jpg`` with an official name, sorted by path (other files are skipped)."""
    root = Path(db_dir)
    out = []
    for p in sorted((root / "database").glob("*/*/*.jpg")):
        try:
            out.append((parse_db_name(p.name), p.relative_to(root).as_posix()))
        except InputError:
            continue  # not an official DB image name (e.g. a stray file); db verify reports those
    return out

"""Small frozen records passed between pipeline stages.

``Photo`` (what we know about an astronaut photo) -> ``Candidate`` (one retrieved DB image) ->
``Localization`` (a photo's ranked candidates, optionally a refined footprint).
DB places themselves are :class:`earthloc.geo.tiles.TileBlock`; footprints are
:class:`earthloc.geo.footprint.Footprint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock


@dataclass(frozen=True)
class Photo:
    """An astronaut photo and its metadata. Only ``path`` or ``mrf`` is needed; the rest may be unknown.

    ``nadir`` is the ISS sub-satellite point ``(lat, lon)`` in degrees; ``altitude_km`` the ISS height
    above the ellipsoid; ``time`` the UTC exposure time (or the day, when only the date is known).
    ``centre`` (NASA's centre point) and ``footprint`` are ground truth, used only by evaluation.
    """

    mrf: str
    path: Path | None = None
    time: datetime | None = None
    nadir: tuple[float, float] | None = None
    altitude_km: float | None = None
    centre: tuple[float, float] | None = None
    footprint: Footprint | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Candidate:
    """One retrieved DB image: its place, year, the rotation (degrees, counter-clockwise, applied to
    the DB image, EarthLoc's convention) that matched best, the similarity score (higher is better)
    and its footprint."""

    tile: TileBlock
    year: int
    rotation_deg: int
    score: float
    footprint: Footprint
    path: str | None = None


@dataclass(frozen=True)
class Localization:
    """A photo's ranked candidates (best first), plus verification/refinement results when they ran:
    ``confidence`` = P(the refined footprint holds the photo's true centre) when calibrated,
    ``verified`` = that confidence reached the calibrated threshold (``None``: not verified)."""

    photo: Photo
    candidates: tuple[Candidate, ...]
    refined_footprint: Footprint | None = None
    confidence: float | None = None
    inliers: int | None = None
    error: str | None = None
    verified: bool | None = None

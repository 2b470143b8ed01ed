"""The official EarthLoc test areas: named centres (degrees) that the evaluation protocol and the DB
grid (``--region AREA``) both use."""

from __future__ import annotations

from earthloc.errors import InputError

TEST_AREAS: dict[str, tuple[float, float]] = {
    "alps": (45.0, 10.0),
    "texas": (30.0, -95.0),
    "toshka": (23.0, 30.0),
    "amazon": (-3.0, -60.0),
    "napa": (38.0, -122.0),
    "gobi": (40.0, 105.0),
}


def area_centre(area: str | tuple[float, float]) -> tuple[float, float]:
    """``(lat, lon)`` of a named test area (case-insensitive) or of an explicit ``(lat, lon)``."""
    if isinstance(area, str):
        key = area.strip().lower()
        if key not in TEST_AREAS:
            raise InputError(area, f"unknown test area; known: {', '.join(TEST_AREAS)}")
        return TEST_AREAS[key]
    lat, lon = (float(v) for v in area)
    return lat, lon

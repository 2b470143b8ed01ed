"""Open a tile source from a short text spec (what ``earthloc db build --source`` takes).

=====================================  ========================================================
``eox``                                EOX Sentinel-2 cloudless 2018-2021 over WMTS (attribution!)
``wmts:URL``                           any WMTS/XYZ template with {z} {x} {y} [{year}]; needs --years
``raster:YEAR=PATH[,YEAR=PATH...]``    one GeoTIFF/COG per year, warped to EPSG:3857
``iss-mini[:DIR]``                     the iss_mini Sentinel-2 contexts (default: shared data)
``official:DIR`` or an existing DIR    an official-layout DB folder, read-only
``stac:URL``                           cloudless Sentinel-2 medians from a STAC API; needs --years
=====================================  ========================================================
"""

from __future__ import annotations

from pathlib import Path

from earthloc.errors import InputError
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.official_folder import OfficialSource
from earthloc.sources.raster import RasterSource
from earthloc.sources.wmts import EOX_URL, WmtsSource


def open_source(spec: str, years: list[int] | None = None, cache_dir: Path | None = None,
                concurrency: int = 8, rate_per_host: float | None = 16.0, retries: int = 8,
                stac: dict | None = None, limits=None):
    """Build the TileSource described by ``spec`` (see the module table); network options apply to WMTS
    (and ``retries``/``concurrency`` to STAC); ``stac``: more keyword arguments of
    :class:`earthloc.sources.stac.StacSource` (collection, season, mask_snow, min_clear, ...).
    ``limits``: a :class:`earthloc.sources.wmts.HostLimits` shared with other sources (a Ray build's
    cluster-wide one) instead of a WMTS source's own rate and concurrency limits; a STAC source's COG
    reads go through it too.
    """
    kind, sep, arg = spec.partition(":")
    if kind == "stac" and arg:
        from earthloc.sources.stac import StacSource  # noqa: PLC0415  pulls pystac_client/odc/dask: stac: only

        return StacSource(arg, years, retries=retries, workers=concurrency, limits=limits, **(stac or {}))
    if spec.startswith(("http://", "https://")):
        kind, arg = "wmts", spec
    if kind == "eox" and not sep:
        return WmtsSource(EOX_URL, years=years, cache_dir=cache_dir, concurrency=concurrency,
                          rate_per_host=rate_per_host, retries=retries, limits=limits)
    if kind == "wmts" and arg:
        return WmtsSource(arg, years=years, cache_dir=cache_dir, concurrency=concurrency,
                          rate_per_host=rate_per_host, retries=retries, limits=limits)
    if kind == "raster" and arg:
        paths = {}
        for item in arg.split(","):
            y, eq, p = item.partition("=")
            if not eq or not y.strip().isdigit():
                raise InputError(f"source {spec}", f"expected YEAR=PATH, got {item!r}")
            if not Path(p).is_file():
                raise InputError(p, "raster not found")
            paths[int(y)] = Path(p)
        return RasterSource(paths)
    if kind in ("iss-mini", "iss_mini"):
        return IssMini.open(Path(arg) if arg else None).source()
    if kind == "official" and arg or Path(spec).is_dir():
        return OfficialSource(Path(arg if kind == "official" else spec))
    raise InputError(f"source {spec}", "use eox, wmts:URL, raster:YEAR=PATH,..., iss-mini[:DIR], official:DIR, stac:URL")

"""Cloudless Sentinel-2 composites from a STAC API, cut into the DB's Web-Mercator tiles.

Per DB place (a 4x4 block of 256-px tiles) and year (or season):

1. **search** the items of ``collection`` (default ``sentinel-2-l2a``) whose footprint meets the place
   (pystac-client), keep per scene tile the ``max_items`` least cloudy by ``eo:cloud_cover``;
2. **read** the red, green, blue and SCL assets with odc-stac straight into the place's Web-Mercator grid
   (``4*256`` px, exact tile edges; dask chunks, one per band and date). Our odc reader driver opens each
   COG through :class:`RangeHttp`: only the header and the COG blocks (of the overview nearest the DB
   resolution) that the place needs are fetched, with retries and backoff, and every request and byte is
   counted for the place;
3. **mask** what the scene classification (SCL) says is not clear ground: no data (0), saturated (1),
   cloud shadow (3), cloud medium/high probability (8, 9), thin cirrus (10), and snow (11) when
   ``mask_snow``; keep dark area (2), vegetation (4), bare (5), water (6) and unclassified (7);
4. **median** of the clear observations per pixel (xarray on dask), then **true colour**
   (:func:`true_colour`: ``255 * clip(gain * reflectance, 0, 1) ** (1 / gamma)``, gain 2.5, gamma 1.2).

A pixel with no clear observation is black, never a cloudy value. Each (place, year) gets a
:class:`PlaceReport`: clear observations (the 1st percentile over the pixels, so "N" means 99% of the
place saw at least N clear dates), share of pixels with none, items, requests, bytes, seconds. Places
under ``min_clear`` are listed in the report and, with ``skip_sparse``, left out of the DB
(:class:`~earthloc.sources.base.ImageSkipped`).

Reflectance: ``DN * scale + offset`` from the asset's ``raster:bands`` when given (Earth Search);
otherwise scale 1e-4 with offset -0.1 for processing baseline >= 04.00 (Planetary Computer items keep
the +1000 DN offset of baseline 04.00).
"""

from __future__ import annotations

import calendar
import csv
import io
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dask
import httpx
import mercantile
import numpy as np
import odc.stac
import pandas as pd
import pystac
import rasterio
import rasterio.warp
import rasterio.windows
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.loader import RioDriver
from PIL import Image
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from earthloc import __version__
from earthloc.atomic import atomic_path
from earthloc.errors import InputError
from earthloc.geo.tiles import TILE_PX, TileBlock
from earthloc.sources.base import ImageSkipped
from earthloc.sources.wmts import HostLimits

DEFAULT_COLLECTION = "sentinel-2-l2a"
# asset keys per role: Earth Search v1 names first, then Planetary Computer / ESA band names
ASSET_KEYS = {"red": ("red", "B04"), "green": ("green", "B03"), "blue": ("blue", "B02"), "scl": ("scl", "SCL")}
SCL_MASKED = (0, 1, 3, 8, 9, 10)  # no data, saturated, cloud shadow, cloud medium/high, cirrus
SCL_SNOW = 11
GAIN = 2.5  # reflectance 0.4 -> white, as in the common Sentinel-2 true-colour rendering
GAMMA = 1.2  # lifts dark vegetation and water a little, closer to the cloudless mosaics' look
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1 << 14  # bytes per header piece: a COG header (IFDs, tile offsets) comes in one or two
S2_FIRST_YEAR = 2015
_PYSTAC_LOCK = threading.Lock()
_WARP_LOCK = threading.Lock()


def true_colour(reflectance: np.ndarray, gain: float = GAIN, gamma: float = GAMMA) -> np.ndarray:
    """uint8 display values of surface reflectance (any shape; NaN -> 0): ``255 * clip(gain*r, 0, 1)**(1/gamma)``."""
    r = np.clip(np.nan_to_num(reflectance, nan=0.0) * gain, 0.0, 1.0)
    return np.round(255.0 * r ** (1.0 / gamma)).astype(np.uint8)


def clear_median(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median over the last axis ignoring NaN (NaN where all are NaN); ``(..., T) -> (...)``.

    Sorting puts NaN last, so the median of the ``n`` valid values sits at ``(n-1)//2`` and ``n//2``
    (numpy's nanmedian takes a slow path on all-NaN pixels, which cloudy places are full of).
    """
    s = np.sort(stack, axis=-1)
    n = np.count_nonzero(~np.isnan(stack), axis=-1)
    lo = np.take_along_axis(s, np.maximum(n - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(s, (n // 2)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan).astype(np.float32)


class BudgetExceeded(InputError):
    """A place needed more requests or bytes than allowed."""


@dataclass
class Budget:
    """Requests, retries and bytes spent on one place (thread-safe counters), with optional caps."""

    max_requests: int | None = None
    max_bytes: int | None = None
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    error: InputError | None = None  # the last read that failed for good (GDAL wraps it; we re-raise it)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def spend(self, nbytes: int, retry: bool = False, where: str = "") -> None:
        """Count one request of ``nbytes`` bytes (``retry``: a retried one); raises BudgetExceeded past a cap."""
        with self._lock:
            self.requests += 1
            self.retries += retry
            self.bytes += nbytes
            over = (self.max_requests and self.requests > self.max_requests) or \
                   (self.max_bytes and self.bytes > self.max_bytes)
        if over:
            self.error = BudgetExceeded(where, f"over the per-place budget ({self.requests} requests, "
                                               f"{self.bytes} bytes)")
            raise self.error


class RangeHttp:
    """HTTP range reads with retries (exponential backoff + jitter) on 5xx/429, timeouts, resets and
    truncated bodies; 4xx other than 429 fail at once. One client (connection pool) for all places."""

    def __init__(self, retries: int = 6, timeout_s: float = 30.0, backoff_s: float = 0.5, concurrency: int = 8,
                 limits: HostLimits | None = None):
        self.retries, self.backoff_s = retries, backoff_s
        self.limits = limits  # per-host rate and requests in flight shared with others (a Ray build's gate)
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=True,
                                   limits=httpx.Limits(max_connections=concurrency),
                                   headers={"User-Agent": f"earthloc/{__version__}"})
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def get_range(self, url: str, start: int, end: int, budget: Budget) -> tuple[bytes, int]:
        """Bytes ``start..end`` (inclusive) of ``url`` and the file's total size; retried until complete."""
        host = urlsplit(url).netloc
        for attempt in range(self.retries + 1):
            retry = attempt > 0
            try:
                with self.limits.request(host) if self.limits else nullcontext():
                    r = self.client.get(url, headers={"Range": f"bytes={start}-{end}"})
                    body = r.content
            except (httpx.TimeoutException, httpx.TransportError) as err:  # slow, reset, truncated (Content-Length)
                budget.spend(0, retry, url)
                problem = f"{type(err).__name__}: {err}"
            else:
                budget.spend(len(body), retry, url)
                if r.status_code == 206:
                    size = int(r.headers.get("Content-Range", "*/0").rpartition("/")[2] or 0)
                    if len(body) == min(end, size - 1) - start + 1:
                        return body, size
                    problem = f"short body ({len(body)} bytes)"
                elif r.status_code == 200:  # server ignored Range: whole file
                    return body[start:end + 1], len(body)
                elif r.status_code == 416:
                    return b"", start
                elif r.status_code in RETRY_STATUS:
                    problem = f"HTTP {r.status_code}"
                    wait = r.headers.get("Retry-After", "")
                    if self.limits and r.status_code == 429 and wait.isdigit():
                        self.limits.pause(host, float(wait))  # everyone sharing the limits waits, not only us
                elif r.status_code == 404:
                    raise FileNotFoundError(url)
                else:
                    raise InputError(url, f"HTTP {r.status_code} (not retried)")
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt * (0.5 + random.random()))
        budget.error = InputError(url, f"failed after {self.retries + 1} tries: {problem}")
        raise budget.error


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests (what rasterio's ``opener`` wants).

    Small reads (GDAL's header and tag reads) go through aligned :data:`CHUNK`-byte pieces fetched once,
    so the header costs about one request; larger reads (the COG blocks of the window) are fetched
    exactly, one request each.
    """

    def __init__(self, http: RangeHttp, url: str, budget: Budget, chunks: OrderedDict | None = None):
        super().__init__()
        self.http, self.url, self.budget = http, url, budget
        self.pos = 0
        self._chunks: OrderedDict[int, bytes] = OrderedDict() if chunks is None else chunks
        size = http._sizes.get(url)
        if size is None or 0 not in self._chunks:
            self._chunks[0], size = http.get_range(url, 0, CHUNK - 1, budget)
            with http._lock:
                http._sizes[url] = size
        self.size: int = size

    def readable(self) -> bool:
        """Always True (a read-only file)."""
        return True

    def seekable(self) -> bool:
        """Always True (reads are HTTP range requests)."""
        return True

    def tell(self) -> int:
        """Current position in bytes."""
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` bytes from the start / current position / end (``whence`` 0/1/2); returns it."""
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def _chunk(self, i: int) -> bytes:
        if i not in self._chunks:
            start = i * CHUNK
            self._chunks[i] = self.http.get_range(self.url, start, min(start + CHUNK, self.size) - 1, self.budget)[0]
            while len(self._chunks) > 64:
                self._chunks.popitem(last=False)
        return self._chunks[i]

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes from the current position (-1: to the end), fetched by chunks."""
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        first, last = self.pos // CHUNK, (self.pos + n - 1) // CHUNK
        if n > CHUNK // 4 and not all(i in self._chunks for i in range(first, last + 1)):
            data, _ = self.http.get_range(self.url, self.pos, self.pos + n - 1, self.budget)  # a block: exactly
        else:  # header and tag reads: small, many, close together
            data = b"".join(self._chunk(i) for i in range(first, last + 1))
            data = data[self.pos - first * CHUNK:][:n]
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        """Read into the buffer ``b``; returns the number of bytes read."""
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _WindowReader:
    """odc-loader reader: one asset warped into the place's grid, from the overview nearest its resolution."""

    def __init__(self, uri: str, band: int, http: RangeHttp, budget: Budget):
        self.uri, self.band, self.http, self.budget = uri, band, http, budget
        self._chunks: OrderedDict[int, bytes] = OrderedDict()  # shared by both opens: the header is read once

    def _opener(self, path: str, mode: str = "rb") -> RangeFile:
        if path != self.uri:  # GDAL probing for side-car files (.aux.xml, .msk, ...): COGs have none
            raise FileNotFoundError(path)
        return RangeFile(self.http, path, self.budget, self._chunks)

    def read(self, cfg, dst_geobox: GeoBox, *, dst=None, selection=None):
        try:
            out = self._read(cfg, dst_geobox)
        except rasterio.errors.RasterioError as err:
            raise (self.budget.error or InputError(self.uri, f"cannot read ({err})")) from err  # ours, unwrapped
        roi = (slice(0, out.shape[0]), slice(0, out.shape[1]))
        if dst is not None:
            dst[...] = out
            return roi, dst
        return roi, out

    def _read(self, cfg, dst_geobox: GeoBox) -> np.ndarray:
        band = self.band or 1
        # one open at a time per URL: rasterio registers one opener per path
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_PAM_ENABLED="NO"):
            with rasterio.open(self.uri, opener=self._opener) as ds:
                level = _overview_level(ds, dst_geobox, cfg.resampling)
                src_nodata = ds.nodata
                nodata = cfg.fill_value if cfg.fill_value is not None else (src_nodata if src_nodata is not None else 0)
                out = np.full(dst_geobox.shape.yx, nodata, dtype=cfg.dtype or ds.dtypes[band - 1])
                if level is None:
                    self._warp(ds, band, out, src_nodata, nodata, dst_geobox, cfg.resampling)
                    return out
            with rasterio.open(self.uri, opener=self._opener, overview_level=level) as ovr:
                self._warp(ovr, band, out, src_nodata, nodata, dst_geobox, cfg.resampling)
        return out

    @staticmethod
    def _warp(ds, band: int, out: np.ndarray, src_nodata, nodata, dst_geobox: GeoBox, resampling: str) -> None:
        """Read the window of ``band`` that covers ``dst_geobox`` (+2 px for the resampling kernel) and warp
        it into ``out``: only the COG blocks under that window are fetched."""
        bounds = rasterio.warp.transform_bounds(_wkt(dst_geobox), ds.crs, *dst_geobox.boundingbox,
                                                densify_pts=21)
        w = ds.window(*bounds)
        c0, r0 = max(0, math.floor(w.col_off) - 2), max(0, math.floor(w.row_off) - 2)
        c1 = min(ds.width, math.ceil(w.col_off + w.width) + 2)
        r1 = min(ds.height, math.ceil(w.row_off + w.height) + 2)
        if c1 <= c0 or r1 <= r0:  # the scene's raster misses the place: nothing to read
            return
        win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        arr = ds.read(band, window=win)
        with _WARP_LOCK:  # concurrent MEM->MEM warps sometimes lose the geotransform (rasterio#3121, odc-geo#131)
            rasterio.warp.reproject(arr, out, src_transform=ds.window_transform(win), src_crs=ds.crs,
                                    src_nodata=src_nodata, dst_nodata=nodata, dst_crs=_wkt(dst_geobox),
                                    dst_transform=dst_geobox.transform,
                                    resampling=rasterio.enums.Resampling[resampling])


def _wkt(gbox: GeoBox) -> str:
    """WKT of a geobox's CRS (our geoboxes always have one)."""
    if gbox.crs is None:
        raise ValueError("geobox without a CRS")
    return gbox.crs.to_wkt()


def _overview_level(ds, dst: GeoBox, resampling: str) -> int | None:
    """Index of the coarsest overview still at least as fine as the destination pixel (None = full res)."""
    ovr = ds.overviews(1)
    if not ovr:
        return None
    w, s, e, n = rasterio.warp.transform_bounds(_wkt(dst), ds.crs, *dst.boundingbox)
    dst_px = math.sqrt((e - w) * (n - s) / (dst.shape.x * dst.shape.y))  # destination pixel in source units
    src_px = math.sqrt(abs(ds.transform.a * ds.transform.e))
    shrink = dst_px / src_px
    level = None
    for i, f in enumerate(ovr):
        if f <= shrink * (1.0 if resampling != "nearest" else 1.5):
            level = i
    return level


class _CountingDriver(RioDriver):
    """odc-stac's rasterio driver, with reads through :class:`RangeHttp` charged to one place's budget."""

    def __init__(self, http: RangeHttp, budget: Budget):
        super().__init__()
        self.http, self.budget = http, budget

    def open(self, src, ctx) -> _WindowReader:  # type: ignore[override]  # any odc RasterReader will do
        return _WindowReader(src.uri, src.band, self.http, self.budget)


@dataclass(frozen=True)
class PlaceReport:
    """What one (place, year) composite took and found. ``clear_obs``: 1st percentile over pixels of the
    number of clear observations; ``empty_share``: share of pixels with none (rendered black)."""

    place: str
    year: int
    items: int
    clear_obs: int
    empty_share: float
    requests: int
    retries: int
    bytes: int
    seconds: float
    skipped: bool


@dataclass(frozen=True)
class Composite:
    """The true-colour median of a place: ``rgb`` (H, W, 3) uint8 and per-pixel ``clear`` counts (H, W)."""

    rgb: np.ndarray
    clear: np.ndarray
    report: PlaceReport


def place_geobox(block: TileBlock, px_per_tile: int = TILE_PX) -> GeoBox:
    """The EPSG:3857 pixel grid of ``block``: exact tile edges, ``size*px_per_tile`` px per side."""
    nw = mercantile.xy_bounds(block.col, block.row, block.zoom)
    se = mercantile.xy_bounds(block.col + block.size - 1, block.row + block.size - 1, block.zoom)
    side = block.size * px_per_tile
    return GeoBox.from_bbox((nw.left, se.bottom, se.right, nw.top), "EPSG:3857", shape=(side, side))


def _datetime_range(year: int, season: tuple[int, int] | None) -> str:
    """STAC datetime interval for ``year`` or its ``(first_month, last_month)`` season (may wrap the year end)."""
    m1, m2 = season or (1, 12)
    y2 = year + 1 if m2 < m1 else year
    return f"{year}-{m1:02d}-01T00:00:00Z/{y2}-{m2:02d}-{calendar.monthrange(y2, m2)[1]:02d}T23:59:59Z"


def _reflectance_coeffs(item: pystac.Item, asset: str) -> tuple[float, float]:
    """(scale, offset) turning DN into surface reflectance for ``asset`` of ``item``."""
    bands = item.assets[asset].extra_fields.get("raster:bands") or [{}]
    if "scale" in bands[0] or "offset" in bands[0]:
        return float(bands[0].get("scale", 1.0)), float(bands[0].get("offset", 0.0))
    baseline = item.properties.get("s2:processing_baseline")
    try:
        harmonised = baseline is not None and float(baseline) >= 4.0
    except ValueError:
        harmonised = False
    return 1e-4, -0.1 if harmonised else 0.0


def _solar_date(when, lon: float):
    """Local solar date at longitude ``lon`` of a datetime / datetime64 (how ``groupby='solar_day'`` groups)."""
    t = pd.Timestamp(when)
    if t.tzinfo is not None:
        t = t.tz_convert(None)
    return (t + pd.Timedelta(hours=lon / 15.0)).date()


class StacSource:
    """A tile source that renders per-place cloudless Sentinel-2 medians from a STAC API (see module doc).

    ``years``: years to serve (required: a STAC collection has no fixed list). ``season``: months
    ``(first, last)`` within each year (wrapping, e.g. ``(11, 2)``, runs into the next year). ``modifier``:
    pystac-client's item modifier, e.g. ``planetary_computer.sign_inplace`` (Planetary Computer asset URLs
    need SAS tokens; each place's search signs its items afresh). ``workers``: reads in flight per place
    (dask threads). ``max_requests`` / ``max_bytes``: per-place caps (:class:`BudgetExceeded`). ``limits``:
    per-host rate and requests in flight for the COG reads, shared with other sources (a Ray build passes
    its cluster-wide :class:`earthloc.sources.wmts.HostLimits`; None: only ``workers`` bounds them).
    """

    def __init__(self, url: str, years: Sequence[int] | None, collection: str = DEFAULT_COLLECTION,
                 season: tuple[int, int] | None = None, mask_snow: bool = False, min_clear: int = 1,
                 skip_sparse: bool = False, max_items: int = 16, max_cloud: float = 80.0, retries: int = 6,
                 timeout_s: float = 30.0, backoff_s: float = 0.5, workers: int = 8,
                 max_requests: int | None = None, max_bytes: int | None = None,
                 mask_classes: Sequence[int] | None = None, modifier: Callable | None = None, cache: int = 4,
                 limits: HostLimits | None = None):
        if not years:
            raise InputError("years", "a STAC source needs the years to composite")
        if bad := [y for y in years if y < S2_FIRST_YEAR]:
            raise InputError(f"years {bad}", f"Sentinel-2 data start in {S2_FIRST_YEAR}")
        if season and not all(1 <= m <= 12 for m in season):
            raise InputError(f"season {season}", "months must be 1..12")
        if min_clear < 0 or max_items < 1:
            raise InputError("min_clear/max_items", "min_clear must be >= 0 and max_items >= 1")
        self.url, self.collection, self.season = url.rstrip("/"), collection, season
        self._years = tuple(sorted(set(years)))
        masked = tuple(SCL_MASKED if mask_classes is None else mask_classes)
        self.masked = masked + ((SCL_SNOW,) if mask_snow and SCL_SNOW not in masked else ())
        self.min_clear, self.skip_sparse = min_clear, skip_sparse
        self.max_items, self.max_cloud, self.workers = max_items, max_cloud, workers
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.modifier = modifier
        self.http = RangeHttp(retries, timeout_s, backoff_s, concurrency=max(8, workers), limits=limits)
        self._retries, self._timeout_s, self._backoff_s = retries, timeout_s, backoff_s
        self._tls = threading.local()
        self._cache: OrderedDict[tuple, Composite] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()
        self.reports: list[PlaceReport] = []
        self.attribution = (f"Contains modified Copernicus Sentinel data {', '.join(map(str, self._years))} "
                            f"(via {self.url}, collection {collection})")

    @property
    def years(self) -> tuple[int, ...]:
        """Years composited (sorted)."""
        return self._years

    # --- search ----------------------------------------------------------------------------------
    def _stac(self) -> Client:
        """This thread's pystac-client Client (requests sessions are not shared between threads)."""
        client = getattr(self._tls, "client", None)
        if client is None:
            retry = Retry(total=self._retries, connect=2, backoff_factor=self._backoff_s,  # a refused host: soon
                          status_forcelist=sorted(RETRY_STATUS), allowed_methods=None, raise_on_status=False)
            io_ = StacApiIO(timeout=self._timeout_s, max_retries=retry)
            io_.session.hooks["response"].append(self._count_search)
            try:
                client = Client.open(self.url, stac_io=io_, modifier=self.modifier)
            except Exception as err:  # noqa: BLE001 (any failure to open the API is the URL's problem)
                raise InputError(self.url, f"cannot open the STAC API ({type(err).__name__}: {err})") from err
            self._tls.client = client
        return client

    def _count_search(self, r, *args, **kwargs):
        """requests hook: charge each search response (page) to the place being searched in this thread."""
        budget = getattr(self._tls, "budget", None)
        if budget is not None:
            budget.spend(len(r.content), where=r.url)
        return r

    def search(self, block: TileBlock, year: int, budget: Budget | None = None) -> list[pystac.Item]:
        """The items of the collection meeting ``block`` in ``year``: per scene tile (``grid:code`` or
        ``s2:mgrs_tile``), the ``max_items`` least cloudy with ``eo:cloud_cover <= max_cloud``."""
        budget = budget or Budget()
        client = self._stac()
        self._tls.budget = budget
        try:
            with _PYSTAC_LOCK:  # pystac's item parsing touches module-level dicts: not thread-safe
                found = client.search(collections=[self.collection], bbox=list(block.bounds),
                                      datetime=_datetime_range(year, self.season), limit=100)
                items = list(found.items())
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 (pystac-client raises APIError, requests errors...)
            raise InputError(self.url, f"search failed for {block.name} {year} ({type(err).__name__}: {err})") from err
        finally:
            self._tls.budget = None
        per_tile: dict[str, list] = {}  # a large place spans several scene tiles: each gets max_items
        for it in items:
            cloud = float(it.properties.get("eo:cloud_cover", 0.0))
            if cloud <= self.max_cloud:
                per_tile.setdefault(_grid_tile(it), []).append((cloud, it.datetime, it.id, it))
        kept = [row for rows in per_tile.values() for row in sorted(rows)[:self.max_items]]
        return [it for *_, it in sorted(kept)]

    # --- composite -------------------------------------------------------------------------------
    def composite(self, block: TileBlock, year: int, px_per_tile: int = TILE_PX) -> Composite:
        """Search, read, mask and take the median for ``block`` in ``year`` (see the module doc)."""
        t0 = time.perf_counter()
        budget = Budget(self.max_requests, self.max_bytes)
        items = self.search(block, year, budget)
        gbox = place_geobox(block, px_per_tile)
        side = gbox.shape.x
        if items:
            rgb, clear = self._median(items, gbox, block, budget)
        else:
            rgb, clear = np.zeros((side, side, 3), np.uint8), np.zeros((side, side), np.uint16)
        clear_obs = int(np.percentile(clear, 1, method="lower"))
        skipped = self.skip_sparse and clear_obs < self.min_clear
        rep = PlaceReport(block.name, year, len(items), clear_obs, float((clear == 0).mean()), budget.requests,
                          budget.retries, budget.bytes, time.perf_counter() - t0, skipped)
        with self._lock:
            self.reports.append(rep)
        return Composite(rgb, clear, rep)

    def _load(self, items: list[pystac.Item], bands: list[str], gbox: GeoBox, budget: Budget):
        """Lazy (dask) xarray Dataset of ``bands`` of ``items`` on ``gbox``, one time step per solar day."""
        up = _upsampling(items[0], bands[0], gbox)
        resampling = {bands[-1]: "nearest", "*": "bilinear" if up else "average"}  # SCL classes are not averaged
        with _PYSTAC_LOCK:  # metadata parsing only (lazy dask arrays); pystac is not thread-safe
            return odc.stac.load(items, bands=bands, geobox=gbox, groupby="solar_day",
                                 chunks={"x": gbox.shape.x, "y": gbox.shape.y}, resampling=resampling,
                                 driver=_CountingDriver(self.http, budget))

    def _median(self, items, gbox: GeoBox, block: TileBlock, budget: Budget) -> tuple[np.ndarray, np.ndarray]:
        keys = {role: _asset_key(items[0], role) for role in ASSET_KEYS}
        colour = [keys["red"], keys["green"], keys["blue"]]
        # read one chunk per band and date (one open per file), then reduce in 256-px pieces: the float
        # stacks of a many-date place stay small (T x 256 x 256) instead of T x 1024 x 1024 per band
        ds = self._load(items, colour + [keys["scl"]], gbox, budget).chunk({"time": -1, "y": 256, "x": 256})
        lon = block.centre[1]
        coeff: dict = {}
        for it in items:  # items of one solar day share a processing baseline
            coeff.setdefault(_solar_date(it.datetime, lon), [_reflectance_coeffs(it, k) for k in colour])
        days = [_solar_date(t, lon) for t in ds.time.values]
        scale = np.array([[c[0] for c in coeff[d]] for d in days], np.float32)  # (T, 3)
        offset = np.array([[c[1] for c in coeff[d]] for d in days], np.float32)
        clear = ~ds[keys["scl"]].isin(list(self.masked))
        refl = [ds[k].astype("float32") * scale[:, i, None, None] + offset[:, i, None, None]
                for i, k in enumerate(colour)]
        valid = [(ds[k] != 0) & clear for k in colour]  # DN 0 = no data in S2 L2A
        med = [xr.apply_ufunc(clear_median, r.where(v), input_core_dims=[["time"]], dask="parallelized",
                              output_dtypes=[np.float32]) for r, v in zip(refl, valid)]
        count = (valid[0] & valid[1] & valid[2]).sum("time")
        with dask.config.set(scheduler="threads", num_workers=self.workers):
            r, g, b, n = dask.compute(*med, count)
        rgb = true_colour(np.stack([r.values, g.values, b.values], axis=-1))
        return rgb, n.values.astype(np.uint16)

    def _get(self, block: TileBlock, year: int) -> Composite:
        key = (block, year)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        comp = self.composite(block, year)
        with self._lock:
            self._cache[key] = comp
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return comp

    # --- TileSource ------------------------------------------------------------------------------
    def tiles(self, keys: Sequence[tuple[int, int, int, int]]) -> list[Image.Image]:
        """The tiles ``(z, x, y, year)`` of one block (what :func:`~earthloc.sources.base.compose` asks for),
        cut from one composite of the block that spans them."""
        zs, years = {k[0] for k in keys}, {k[3] for k in keys}
        if len(zs) != 1 or len(years) != 1:
            return [self.tile(*k) for k in keys]
        xs, ys = [k[1] for k in keys], [k[2] for k in keys]
        size = max(max(xs) - min(xs), max(ys) - min(ys)) + 1
        block = TileBlock(zs.pop(), min(ys), min(xs), size)
        comp = self._get(block, years.pop())
        if comp.report.skipped:
            raise ImageSkipped(f"{block.name} {comp.report.year}",
                               f"{comp.report.clear_obs} clear observations < {self.min_clear}")
        out = []
        for _z, x, y, _year in keys:
            r0, c0 = (y - block.row) * TILE_PX, (x - block.col) * TILE_PX
            out.append(Image.fromarray(comp.rgb[r0:r0 + TILE_PX, c0:c0 + TILE_PX]))
        return out

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """One 256-px tile (a 1x1-block composite: searches and reads for this tile alone)."""
        return self.tiles_of(TileBlock(z, y, x, 1), year)[0]

    def tiles_of(self, block: TileBlock, year: int) -> list[Image.Image]:
        """The ``block.size**2`` tiles of ``block`` (row-major), from one composite."""
        return self.tiles([(t.z, t.x, t.y, year) for t in block.tiles()])

    @property
    def totals(self) -> dict:
        """Totals over the composites made so far (for the CLI's closing line)."""
        with self._lock:
            reps = list(self.reports)
        return {"places": len(reps), "requests": sum(r.requests for r in reps),
                "retries": sum(r.retries for r in reps), "bytes": sum(r.bytes for r in reps),
                "sparse": [r for r in reps if r.clear_obs < self.min_clear]}

    def write_report(self, path: Path) -> Path:
        """Write one CSV row per (place, year) (:class:`PlaceReport` fields) to ``path``, atomically.

        Rows already in ``path`` from an earlier (interrupted) run are kept unless recomputed now.
        """
        fields = list(PlaceReport.__dataclass_fields__)
        rows: dict[tuple[str, str], dict] = {}
        if path.is_file():
            with open(path, newline="") as fh:
                rows = {(r["place"], r["year"]): r for r in csv.DictReader(fh)}
        with self._lock:
            for r in self.reports:
                rows[(r.place, str(r.year))] = {
                    "place": r.place, "year": r.year, "items": r.items, "clear_obs": r.clear_obs,
                    "empty_share": f"{r.empty_share:.4f}", "requests": r.requests, "retries": r.retries,
                    "bytes": r.bytes, "seconds": f"{r.seconds:.2f}", "skipped": int(r.skipped)}
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for key in sorted(rows, key=lambda k: (k[1], k[0])):
                w.writerow(rows[key])
        return path

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


def _grid_tile(item: pystac.Item) -> str:
    """The scene tile an item belongs to (Earth Search ``grid:code``, Planetary Computer ``s2:mgrs_tile``)."""
    p = item.properties
    return str(p.get("grid:code") or p.get("s2:mgrs_tile") or p.get("mgrs:grid_square") or "")


def _asset_key(item: pystac.Item, role: str) -> str:
    for key in ASSET_KEYS[role]:
        if key in item.assets:
            return key
    raise InputError(f"item {item.id}", f"has no {role} asset (looked for {', '.join(ASSET_KEYS[role])})")


def _upsampling(item: pystac.Item, asset: str, gbox: GeoBox) -> bool:
    """True when the DB pixel is finer than the asset's (then bilinear; else average over source pixels)."""
    gsd = item.assets[asset].extra_fields.get("gsd") or item.properties.get("gsd") or 10.0
    lat = math.radians(float(gbox.extent.to_crs("EPSG:4326").centroid.coords[0][1]))
    return abs(gbox.resolution.x) * math.cos(lat) < float(gsd)

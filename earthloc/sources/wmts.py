"""WMTS / XYZ tiles over HTTP with a disk cache, retries, a per-host rate limit and bounded concurrency.

The URL template takes ``{z} {x} {y} {year}`` (``x`` = column, ``y`` = row from the north). Defaults point
at EOX Sentinel-2 cloudless 2018-2021 (:data:`EOX_URL`); their licence (CC BY-NC-SA 4.0) asks for
:func:`eox_attribution`.

Behaviour, in order of what a long build meets:

- **cache**: every tile is stored once under ``cache_dir`` (raw bytes as served, written atomically after
  they decode), so the 50%-overlapping DB images share tiles and a resumed build fetches nothing twice;
  concurrent requests for the same tile wait for one download (single flight);
- **concurrency**: at most ``concurrency`` requests in flight; **rate**: at most ``rate_per_host``
  request starts per second per host (None = unlimited). Both are enforced by a :class:`HostLimits`
  object; a Ray build hands every worker process the same cluster-wide one
  (:class:`earthloc.db.ray_build.RayHostLimits`), so the limits hold for the whole cluster;
- **retries** with exponential backoff and jitter on 5xx, timeouts, connection resets and bodies that
  are truncated or do not decode; **429** waits ``Retry-After`` (seconds or HTTP date) and pauses the
  whole host, not just one thread; a refused connection to a host that never answered fails at once
  (a wrong URL or a service down, not minutes of silent retries);
- **401/403/404** (and other 4xx) fail at once with :class:`TileFetchError` naming the URL; **404/410**,
  and 5xx or undecodable bodies until the retries run out, raise :class:`TileNotServed` (a
  :class:`~earthloc.sources.base.TileMissing`): the DB build records that place as missing and goes on.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

import httpx
from PIL import Image

from earthloc import __version__
from earthloc.atomic import write_bytes
from earthloc.config import cache_dir as default_cache_dir
from earthloc.errors import InputError
from earthloc.geo.tiles import TILE_PX
from earthloc.sources.base import TileMissing

EOX_URL = (
    "https://s2maps-tiles.eu/wmts?layer=s2cloudless-{year}_3857&style=default&tilematrixset=GoogleMapsCompatible"
    "&Service=WMTS&Request=GetTile&Version=1.0.0&Format=image/jpeg&TileMatrix={z}&TileCol={x}&TileRow={y}"
)
EOX_YEARS = (2018, 2019, 2020, 2021)
RETRY_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 524})
GONE_STATUS = frozenset({404, 410})  # the service has no such tile: retrying cannot help
_HINTS = {
    401: "authentication required (does the service need an API key in the URL?)",
    403: "forbidden (EOX blocks bulk downloads: lower rate_per_host/concurrency, or use your own tiles)",
    404: "not found (check the URL template, layer name and year)",
}


def eox_attribution(*years: int) -> str:
    """The attribution EOX requires for the s2cloudless mosaics of ``years``."""
    return (f"Sentinel-2 cloudless - https://s2maps.eu by EOX IT Services GmbH "
            f"(Contains modified Copernicus Sentinel data {', '.join(str(y) for y in sorted(years))})")


class TileFetchError(InputError):
    """A tile could not be fetched: the message names the URL and the HTTP status or transport error."""


class TileNotServed(TileFetchError, TileMissing):
    """The service answered, but not with this tile (404/410, or 5xx / broken bodies until retries ran out)."""


class RateLimiter:
    """Spaces request starts at least ``1/rate`` seconds apart (thread-safe); ``pause`` holds all for a while."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until this request may start (at least ``1/rate`` s after the previous start)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


class HostLimits(Protocol):
    """Request rate and requests in flight per host, shared by everything that talks to the host."""

    def request(self, host: str):
        """Context manager: holds one of the host's request slots, entered no earlier than its rate allows."""
        ...

    def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` (a 429's Retry-After)."""
        ...

    def fetching(self, url: str):
        """Context manager: entered when no other holder of these limits is fetching ``url`` (single flight
        across processes; within a process :class:`WmtsSource` already shares one download)."""
        ...


class LocalHostLimits:
    """:class:`HostLimits` for the threads of one process: ``concurrency`` slots and ``rate`` starts/s per host."""

    def __init__(self, rate: float | None, concurrency: int):
        self._rate, self._concurrency = rate, max(1, concurrency)
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[RateLimiter, threading.BoundedSemaphore]] = {}

    def _host(self, host: str) -> tuple[RateLimiter, threading.BoundedSemaphore]:
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = (RateLimiter(self._rate), threading.BoundedSemaphore(self._concurrency))
            return self._hosts[host]

    @contextmanager
    def request(self, host: str) -> Iterator[None]:
        """Context manager: one of ``host``'s request slots, entered no earlier than its rate allows."""
        limiter, slots = self._host(host)
        with slots:  # slot first, then the start time: a start booked by the limiter is a request sent
            limiter.acquire()
            yield

    def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` (a 429's Retry-After)."""
        self._host(host)[0].pause(seconds)

    def fetching(self, url: str) -> AbstractContextManager[None]:
        """A no-op context manager: within one process the source's single flight covers ``url``."""
        return nullcontext()  # one process: the source's own single flight covers it


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode(data: bytes) -> Image.Image:
    """Fully decode tile bytes to RGB (raises on truncated/corrupt data)."""
    img: Image.Image = Image.open(io.BytesIO(data))
    img.load()  # decodes everything now: a truncated body raises here, not later
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (TILE_PX, TILE_PX):
        raise ValueError(f"tile is {img.size[0]}x{img.size[1]} px, expected {TILE_PX}x{TILE_PX}")
    return img


class WmtsSource:
    """A :class:`~earthloc.sources.base.TileSource` over a WMTS/XYZ URL template.

    ``stats`` counts ``requests`` (HTTP attempts, retries included), ``downloads`` (tiles fetched),
    ``cache_hits`` (served from memory or disk) and ``retries``. ``memory_tiles`` decoded tiles stay in
    an LRU (about 0.2 MB each) so overlapping neighbours do not decode them again. ``limits``: the
    :class:`HostLimits` to obey instead of this source's own ``rate_per_host`` / ``concurrency`` ones
    (``concurrency`` still sizes this process's download threads).
    """

    def __init__(
        self,
        url_template: str = EOX_URL,
        years: tuple[int, ...] | list[int] | None = None,
        cache_dir: str | Path | None = None,
        concurrency: int = 8,
        rate_per_host: float | None = 16.0,
        retries: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 600.0,
        timeout_s: float = 30.0,
        attribution: str | None = None,
        memory_tiles: int = 512,
        limits: HostLimits | None = None,
    ):
        for key in ("{z}", "{x}", "{y}"):
            if key not in url_template:
                raise InputError(url_template, f"URL template lacks {key} (needs {{z}} {{x}} {{y}}, optional {{year}})")
        try:
            url_template.format(z=0, x=0, y=0, year=2000)
        except (KeyError, IndexError, ValueError) as err:
            raise InputError(url_template, f"bad URL template ({err}); allowed fields: z, x, y, year") from err
        if years is None:
            if "s2cloudless" not in url_template:
                raise InputError(url_template, "give the years this template serves")
            years = EOX_YEARS
        if "s2cloudless" in url_template and (bad := sorted(set(map(int, years)) - set(EOX_YEARS))):
            raise InputError(f"years {bad}", f"not served by EOX Sentinel-2 cloudless (it has {list(EOX_YEARS)})")
        self.url_template = url_template
        self._years = tuple(sorted({int(y) for y in years}))
        is_eox = "s2cloudless" in url_template
        self.attribution = attribution or (eox_attribution(*self._years) if is_eox else "")
        key = hashlib.sha256(url_template.encode()).hexdigest()[:12]
        host = urlsplit(url_template).hostname or "local"
        self.cache_root = Path(cache_dir) if cache_dir else default_cache_dir() / "tiles"
        self.cache_root = self.cache_root / f"{host}-{key}"
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._client = httpx.Client(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": f"earthloc/{__version__} (EarthLoc database builder)"},
            follow_redirects=True,
        )
        self.limits = limits or LocalHostLimits(rate_per_host, concurrency)
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="wmts")
        self._guard = threading.Lock()
        self._inflight: dict[tuple, Future] = {}
        self._memory: OrderedDict[tuple, Image.Image] = OrderedDict()  # decoded tiles, LRU
        self._memory_size = memory_tiles
        self.stats = {"requests": 0, "downloads": 0, "cache_hits": 0, "retries": 0}
        self._answered: set[str] = set()  # hosts that gave an HTTP answer: a refused connection there is retried

    # --- TileSource --------------------------------------------------------------------------
    @property
    def years(self) -> tuple[int, ...]:
        """Years served (each maps to its own URL / layer)."""
        return self._years

    def url(self, z: int, x: int, y: int, year: int) -> str:
        """The URL of tile z/x/y of ``year``."""
        return self.url_template.format(z=z, x=x, y=y, year=year)

    def cache_path(self, z: int, x: int, y: int, year: int) -> Path:
        """Where tile z/x/y of ``year`` is cached on disk (its bytes as served)."""
        return self.cache_root / str(year) / str(z) / str(x) / f"{y}.tile"

    def tile(self, z: int, x: int, y: int, year: int) -> Image.Image:
        """The 256-px RGB tile z/x/y of ``year`` (from the cache, else fetched)."""
        return self.tiles([(z, x, y, year)])[0]

    def tiles(self, keys: list[tuple[int, int, int, int]]) -> list[Image.Image]:
        """Tiles for ``(z, x, y, year)`` keys (one DB image's 16): cached ones at once, in this thread;
        the missing ones fetched concurrently on the source's pool."""
        for key in keys:
            if key[3] not in self._years:
                raise InputError(f"year {key[3]}", f"not served by {self.url_template} (years {list(self._years)})")
        out = [self._cached(key) for key in keys]
        fetches = {i: self._fetch(key) for i, (key, img) in enumerate(zip(keys, out)) if img is None}
        for i, fut in fetches.items():
            out[i] = fut.result()  # re-raises TileFetchError
        return cast(list[Image.Image], out)  # every slot is filled by now

    def _fetch(self, key: tuple) -> Future:
        """The one load of ``key`` in flight, started now if there is none (single flight).

        Callers wait on the shared future in their own threads: a pool thread never waits for another
        one's download, so all ``concurrency`` pool threads are always doing HTTP. (When waiters took
        pool threads, neighbouring DB images asking for the same tiles left slots idle: 26 vs 36 img/s.)
        """
        with self._guard:
            fut = self._inflight.get(key)
            if fut is None:
                fut = self._inflight[key] = self._pool.submit(self._load, key)
        return fut

    def _load(self, key: tuple) -> Image.Image:
        """Disk cache (a run before this one, or a download that just finished), else download."""
        try:
            path, url = self.cache_path(*key), self.url(*key)
            img = self._from_cache(path)
            if img is None:
                with self.limits.fetching(url):  # another process sharing the cache may be fetching it
                    img = self._from_cache(path)
                    if img is None:
                        data, img = self._download(url)
                        write_bytes(path, data)
            return self._remember(key, img)
        finally:
            with self._guard:
                self._inflight.pop(key, None)

    def _cached(self, key: tuple) -> Image.Image | None:
        """The tile from memory or the disk cache, or None."""
        with self._guard:
            img = self._memory.get(key)
            if img is not None:
                self._memory.move_to_end(key)
                self.stats["cache_hits"] += 1
                return img
        img = self._from_cache(self.cache_path(*key))
        return None if img is None else self._remember(key, img)

    def close(self) -> None:
        """Stop the fetch pool and close the HTTP client."""
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> WmtsSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._guard:
            self.stats[name] += 1

    def _remember(self, key: tuple, img: Image.Image) -> Image.Image:
        """Keep the decoded tile: the next DB image to the right shares half of its tiles."""
        with self._guard:
            self._memory[key] = img
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_size:
                self._memory.popitem(last=False)
        return img

    def _from_cache(self, path: Path) -> Image.Image | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            img = _decode(data)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # cannot happen with atomic writes, but never trust a bad cache file
            return None
        self._count("cache_hits")
        return img

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _download(self, url: str) -> tuple[bytes, Image.Image]:
        """GET ``url`` until it yields a decodable 256-px image; raise TileFetchError otherwise."""
        host = urlsplit(url).netloc
        last, served = "no attempt", False  # served: the last attempt got an HTTP answer (not a transport error)
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
            wait = None
            served = False
            try:
                with self.limits.request(host):
                    self._count("requests")
                    resp = self._client.get(url)
                    data = resp.content  # reads the whole body; a short body raises here
            except httpx.ConnectError as err:
                if host not in self._answered:  # never reached: a wrong URL or a service down, not a hiccup
                    raise TileFetchError(url, f"cannot connect to {host} ({err}); check the URL and that the "
                                              "service is up and reachable") from None
                last = f"{type(err).__name__}: {err}"
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = f"{type(err).__name__}: {err}"
            else:
                self._answered.add(host)
                status = resp.status_code
                if status == 200:
                    try:
                        img = _decode(data)
                    except (OSError, ValueError) as err:
                        last, served = f"HTTP 200 with an undecodable body of {len(data)} bytes ({err})", True
                    else:
                        self._count("downloads")
                        return data, img
                elif status == 429:
                    wait = _retry_after_s(resp.headers.get("Retry-After"))
                    last = f"HTTP 429 Too Many Requests (Retry-After: {resp.headers.get('Retry-After')})"
                    if wait is not None:
                        if wait > self.max_retry_after_s:
                            raise TileFetchError(url, f"{last}: asks to wait {wait:.0f} s, more than "
                                                      f"{self.max_retry_after_s:.0f} s; try again later")
                        self.limits.pause(host, wait)  # every thread (and worker) talking to this host waits too
                elif status in RETRY_STATUS or status >= 500:
                    last, served = f"HTTP {status}", True
                else:
                    hint = _HINTS.get(status, resp.reason_phrase or "client error")
                    error = TileNotServed if status in GONE_STATUS else TileFetchError
                    raise error(url, f"HTTP {status}: {hint}")
            if attempt < self.retries and wait is None:  # after a 429 the paused limiter does the waiting
                time.sleep(self._backoff(attempt))
        # a host that answers but keeps failing on this one tile: that tile is missing, the rest may be fine;
        # a host that does not answer at all (refused, timeouts) or keeps saying 429 stops the build
        error = TileNotServed if served else TileFetchError
        raise error(url, f"gave up after {self.retries + 1} attempts; last: {last}")

"""A loopback STAC API plus COG file server for tests and benchmarks (no mocks of the network).

- ``GET /`` landing page (STAC API core + item-search conformance), ``GET /collections/{id}``,
  ``GET|POST /search`` with ``collections``, ``bbox``, ``datetime``, ``limit`` and paging (``next`` link
  with a POST body token, as real APIs do);
- ``GET /files/{name}`` serves COG bytes **with HTTP range requests** (206 + Content-Range);
- faults per file request, switchable at run time: scripted per path (``"500"``, ``"truncate"`` =
  Content-Length promised and half sent, ``"slow"`` = waits ``slow_s`` before answering) and random
  500s; every request and body byte is counted per path.

Scenes are made from real imagery by :func:`scene_from_array`: single-band COGs (deflate, 256-px
blocks, overviews) written in memory with rasterio, with an item carrying ``proj`` and ``raster:bands``.
``latency_s`` delays every file answer (a remote server's round trip).
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import rasterio
import rasterio.warp
from rasterio.io import MemoryFile
from shapely.geometry import box, mapping

COLLECTION = "sentinel-2-l2a"


def to_dn(rgb: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Inverse of :func:`earthloc.sources.stac.true_colour`: uint8 display RGB -> uint16 L2A DN with
    reflectance = DN * 1e-4 + ``offset``; DN >= 1 (0 means no data)."""
    from earthloc.sources.stac import GAIN, GAMMA

    refl = (rgb.astype(np.float64) / 255.0) ** GAMMA / GAIN
    return np.clip(np.round((refl - offset) * 1e4), 1, 65535).astype(np.uint16)


def cog_bytes(arr: np.ndarray, crs: str, transform, nodata: int = 0, blocksize: int = 256) -> bytes:
    """One-band Cloud-Optimised GeoTIFF (deflate, internal overviews) of ``arr`` (H, W) as bytes."""
    with MemoryFile() as mem:
        with mem.open(driver="COG", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype.name,
                      crs=crs, transform=transform, nodata=nodata, compress="deflate", blocksize=blocksize,
                      overview_resampling="nearest" if arr.dtype == np.uint8 else "average") as ds:
            ds.write(arr, 1)
        return mem.read()


@dataclass
class Scene:
    """One STAC item: ``files`` maps asset key -> (file name, COG bytes, transform, shape, gsd in metres)."""

    id: str
    when: datetime
    cloud: float
    crs: str
    bbox: tuple[float, float, float, float]  # lon/lat
    files: dict
    offset: float = 0.0  # raster:bands offset of the reflectance bands (-0.1 for baseline >= 04.00)

    def item(self, base: str) -> dict:
        assets = {}
        for key, (name, _data, transform, shape, gsd) in self.files.items():
            scl = key == "scl"
            band = {"data_type": "uint8" if scl else "uint16", "nodata": 0, "spatial_resolution": gsd}
            if not scl:
                band.update(scale=0.0001, offset=self.offset)
            assets[key] = {"href": f"{base}/files/{name}", "type": "image/tiff; application=geotiff; "
                           "profile=cloud-optimized", "roles": ["data"], "gsd": gsd, "proj:code": self.crs,
                           "proj:shape": list(shape), "proj:transform": list(transform)[:6], "raster:bands": [band]}
        return {"type": "Feature", "stac_version": "1.0.0", "id": self.id, "collection": COLLECTION,
                "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                                    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                                    "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
                "bbox": list(self.bbox), "geometry": mapping(box(*self.bbox)),
                "properties": {"datetime": self.when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eo:cloud_cover": self.cloud,
                               "platform": "sentinel-2a", "proj:code": self.crs},
                "links": [], "assets": assets}


def scene_from_array(sid: str, when: datetime, cloud: float, crs: str, transform, rgb_dn: np.ndarray,
                     scl: np.ndarray, scl_transform, gsd: float, offset: float = 0.0) -> Scene:
    """A scene of reflectance DN ``rgb_dn`` (H, W, 3) uint16 and ``scl`` (h, w) uint8 on their own grids."""
    h, w = rgb_dn.shape[:2]
    west, south, east, north = rasterio.warp.transform_bounds(crs, "EPSG:4326", *_bounds(transform, w, h))
    files = {}
    for i, key in enumerate(("red", "green", "blue")):
        files[key] = (f"{sid}_{key}.tif", cog_bytes(np.ascontiguousarray(rgb_dn[..., i]), crs, transform),
                      transform, (h, w), gsd)
    files["scl"] = (f"{sid}_scl.tif", cog_bytes(scl, crs, scl_transform), scl_transform, scl.shape, 2 * gsd)
    return Scene(sid, when, cloud, crs, (west, south, east, north), files, offset)


def _bounds(transform, w: int, h: int) -> tuple[float, float, float, float]:
    left, top = transform @ (0, 0)
    right, bottom = transform @ (w, h)
    return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


@dataclass
class FileFaults:
    """Faults on ``/files/...`` requests: scripted per file name (a list, one per request) and random 500s."""

    script: dict = field(default_factory=dict)
    p_500: float = 0.0
    slow_s: float = 2.0
    seed: int = 0


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up (timeouts we provoke, closed pools) are expected: stay quiet."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class StacServer:
    """Threaded STAC API + COG server on 127.0.0.1; a context manager."""

    def __init__(self, scenes: list[Scene], faults: FileFaults | None = None, page_size: int = 2,
                 latency_s: float = 0.0):
        self.scenes = list(scenes)
        self.latency_s = latency_s  # added to every file request (a remote server is tens of ms away)
        self.faults = faults or FileFaults()
        self.page_size = page_size
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self.files = {name: data for s in self.scenes for (name, data, *_rest) in s.files.values()}
        self.reset_counts()
        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.stac = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def reset_counts(self) -> None:
        with self._lock:
            self.requests: Counter = Counter()  # path -> requests
            self.body_bytes: Counter = Counter()  # path -> bytes sent
            self.outcomes: Counter = Counter()

    def set_faults(self, faults: FileFaults) -> None:
        with self._lock:
            self.faults, self._rng = faults, random.Random(faults.seed)

    def __enter__(self) -> StacServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def file_fault(self, name: str) -> str:
        with self._lock:
            n = self.requests[f"/files/{name}"] - 1
            script = self.faults.script.get(name, [])
            if n < len(script):
                fault = script[n]
            elif self.faults.p_500 and self._rng.random() < self.faults.p_500:
                fault = "500"
            else:
                fault = "ok"
            self.outcomes[fault] += 1
            return fault

    def search(self, params: dict) -> dict:
        """Items matching ``params`` (STAC item-search fields), one page of ``limit``/``page_size``."""
        cols = params.get("collections")
        if isinstance(cols, str):
            cols = cols.split(",")
        bbox = params.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        start, end = _interval(params.get("datetime"))
        hits = [s for s in self.scenes
                if (not cols or COLLECTION in cols)
                and (bbox is None or box(*bbox).intersects(box(*s.bbox)))
                and start <= s.when <= end]
        hits.sort(key=lambda s: (s.when, s.id))
        limit = min(int(params.get("limit", self.page_size)), self.page_size)
        page = int(params.get("token", 0))
        chunk = hits[page * limit:(page + 1) * limit]
        out = {"type": "FeatureCollection", "features": [s.item(self.url) for s in chunk], "links": [],
               "numberMatched": len(hits), "numberReturned": len(chunk)}
        if (page + 1) * limit < len(hits):
            out["links"].append({"rel": "next", "href": f"{self.url}/search", "method": "POST",
                                 "type": "application/geo+json", "body": {"token": page + 1}, "merge": True})
        return out

    def landing(self) -> dict:
        return {"type": "Catalog", "stac_version": "1.0.0", "id": "loopback", "description": "test STAC API",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                               "https://api.stacspec.org/v1.0.0/collections"],
                "links": [{"rel": "self", "href": self.url + "/", "type": "application/json"},
                          {"rel": "root", "href": self.url + "/", "type": "application/json"},
                          {"rel": "data", "href": self.url + "/collections", "type": "application/json"},
                          {"rel": "search", "href": self.url + "/search", "type": "application/geo+json",
                           "method": "GET"},
                          {"rel": "search", "href": self.url + "/search", "type": "application/geo+json",
                           "method": "POST"}]}


def _interval(text: str | None) -> tuple[datetime, datetime]:
    lo, hi = datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    if not text:
        return lo, hi
    a, _, b = text.partition("/")
    parse = lambda v, d: d if v in ("", "..") else datetime.fromisoformat(v.replace("Z", "+00:00"))  # noqa: E731
    return parse(a, lo), parse(b or a, hi)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        parts = urlsplit(self.path)
        stac: StacServer = self.server.stac
        if parts.path.startswith("/files/"):
            return self._file(stac, parts.path[len("/files/"):])
        if parts.path in ("/", ""):
            return self._json(stac.landing())
        if parts.path == "/search":
            return self._json(stac.search({k: v[0] for k, v in parse_qs(parts.query).items()}))
        if parts.path.startswith("/collections"):
            coll = {"type": "Collection", "id": COLLECTION, "stac_version": "1.0.0", "description": "test",
                    "license": "proprietary", "links": [],
                    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
            return self._json({"collections": [coll], "links": []} if parts.path == "/collections" else coll)
        self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)) or 0)
        if urlsplit(self.path).path != "/search":
            return self._send(404, b"not found", "text/plain")
        self._json(self.server.stac.search(json.loads(body or b"{}")))

    def _json(self, obj: dict) -> None:
        self._send(200, json.dumps(obj).encode(), "application/geo+json")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, stac: StacServer, name: str) -> None:
        with stac._lock:
            stac.requests[f"/files/{name}"] += 1
        data = stac.files.get(name)
        if data is None:
            return self._send(404, b"no such file", "text/plain")
        fault = stac.file_fault(name)
        if stac.latency_s:
            time.sleep(stac.latency_s)
        if fault == "500":
            return self._send(500, b"internal error", "text/plain")
        if fault == "slow":
            time.sleep(stac.faults.slow_s)
        m = _RANGE.fullmatch(self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            body, status = data[start:end + 1], 206
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"}
        else:
            body, status, headers = data, 200, {"Accept-Ranges": "bytes"}
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = body[: len(body) // 2] if fault == "truncate" else body
        try:
            self.wfile.write(sent)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # a client that timed out on a slow answer
            return
        with stac._lock:
            stac.body_bytes[f"/files/{name}"] += len(sent)
        if fault == "truncate":  # promised Content-Length, sent half, hang up
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

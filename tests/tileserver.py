"""A real loopback HTTP tile server for tests and benchmarks (no mocks of the network).

Serves 256-px tiles cut from real imagery (by default the iss_mini Sentinel-2-cloudless contexts through
:class:`earthloc.sources.mosaic.MosaicSource`) in two URL styles:

- XYZ: ``/tiles/{year}/{z}/{x}/{y}.jpg`` (or ``.png``) -> :attr:`TileServer.template`;
- EOX-like WMTS KVP: ``/wmts?layer=s2cloudless-{year}_3857&...&TileMatrix=z&TileCol=x&TileRow=y``
  -> :attr:`TileServer.eox_template` (the real EOX template with the host swapped).

Faults are switchable at run time (:class:`Faults`): random 500s, 429 + Retry-After, truncated bodies
(Content-Length promised, half sent, connection closed), connection resets (RST before any byte),
fixed statuses per tile (403/404), and scripted per-tile sequences. Every request is counted per tile,
with the outcome, the arrival time, and the peak number of requests in flight.

Run by hand: ``.venv/bin/python tests/tileserver.py --port 8077`` then point ``earthloc db build --source
wmts:http://127.0.0.1:8077/tiles/{year}/{z}/{x}/{y}.jpg --years 2018`` at it.
"""

from __future__ import annotations

import io
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_XYZ = re.compile(r"^/tiles/(\d{4})/(\d+)/(\d+)/(\d+)\.(jpg|png)$")
_LAYER = re.compile(r"^s2cloudless-(\d{4})_3857$")


@dataclass
class Faults:
    """What goes wrong, per request. Probabilities are drawn from a seeded RNG, in the order listed."""

    p_reset: float = 0.0
    p_500: float = 0.0
    p_429: float = 0.0
    retry_after: str = "1"
    p_truncate: float = 0.0
    status: dict = field(default_factory=dict)  # (year, z, x, y) -> fixed HTTP status, e.g. 403
    script: dict = field(default_factory=dict)  # (year, z, x, y) -> list of faults for successive requests
    seed: int = 0


class RepeatingTiles:
    """Any z/x/y gets the real tile (y mod 12, x mod 12) of one 12x12 iss_mini context at its own zoom.

    For throughput benchmarks over regions larger than any real context: real Sentinel-2 tiles, with
    realistic JPEG sizes and decode costs; geography is meaningless.
    """

    def __init__(self, mini=None, context: str = "12_1164_2526"):
        from earthloc.sources.iss_mini import IssMini

        self.mini = mini or IssMini.open().source()
        self.m = next(m for m in self.mini.mosaics if m.path.stem == context)
        self.years = (self.m.year,)

    def content_key(self, key: tuple) -> tuple:
        year, _z, x, y = key
        return (year, self.m.zoom, self.m.col0 + x % 12, self.m.row0 + y % 12)

    def covers(self, z, x, y, year) -> bool:
        return year == self.m.year

    def tile(self, z, x, y, year):
        return self.mini.tile(*self.content_key((year, z, x, y))[1:], year)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up mid-response (killed builds, resets we injected) are expected: stay quiet."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, OSError)):
            super().handle_error(request, client_address)


class TileServer:
    """Threaded HTTP server on 127.0.0.1 serving real tiles; use as a context manager."""

    def __init__(self, source=None, fmt: str = "jpeg", quality: int = 90, latency_s: float = 0.0,
                 faults: Faults | None = None, port: int = 0):
        if source is None:
            from earthloc.sources.iss_mini import IssMini

            source = IssMini.open().source()
        self.source, self.fmt, self.quality, self.latency_s = source, fmt, quality, latency_s
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._bytes: dict[tuple, bytes] = {}
        self.reset_counts()
        self._httpd = _QuietServer(("127.0.0.1", port), _Handler)
        self._httpd.tileserver = self
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def template(self) -> str:
        ext = "png" if self.fmt == "png" else "jpg"
        return self.url + "/tiles/{year}/{z}/{x}/{y}." + ext

    @property
    def eox_template(self) -> str:
        from earthloc.sources.wmts import EOX_URL

        return EOX_URL.replace("https://s2maps-tiles.eu", self.url)

    def start(self) -> TileServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> TileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- bookkeeping ---------------------------------------------------------------------------
    def reset_counts(self) -> None:
        with self._lock:
            self.counts: Counter = Counter()  # (year, z, x, y) -> requests
            self.outcomes: Counter = Counter()  # "ok" / "500" / "429" / "truncate" / "reset" / "403" ...
            self.arrivals: list[float] = []
            self.in_flight = 0
            self.peak_in_flight = 0

    @property
    def n_requests(self) -> int:
        return sum(self.counts.values())

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def tile_bytes(self, key: tuple) -> bytes | None:
        """Encoded tile for (year, z, x, y), or None when the imagery does not cover it."""
        if hasattr(self.source, "content_key"):  # sources that repeat content: encode each content once
            key = self.source.content_key(key)
        with self._lock:
            if key in self._bytes:
                return self._bytes[key]
        year, z, x, y = key
        if year not in self.source.years or (hasattr(self.source, "covers") and not self.source.covers(z, x, y, year)):
            return None
        img = self.source.tile(z, x, y, year)
        buf = io.BytesIO()
        if self.fmt == "png":
            img.save(buf, format="PNG")
        else:
            img.save(buf, format="JPEG", quality=self.quality)
        with self._lock:
            self._bytes[key] = buf.getvalue()
        return self._bytes[key]

    def _decide(self, key: tuple) -> str:
        """The fault (or "ok") for this request of ``key``; also counts it."""
        with self._lock:
            n = self.counts[key]
            self.counts[key] += 1
            self.arrivals.append(time.monotonic())
            f = self.faults
            if key in f.script and n < len(f.script[key]):
                return f.script[key][n]
            if key in f.status:
                return str(f.status[key])
            for name, p in (("reset", f.p_reset), ("500", f.p_500), ("429", f.p_429), ("truncate", f.p_truncate)):
                if p and self._rng.random() < p:
                    return name
            return "ok"


def _parse(path: str) -> tuple | None:
    """(year, z, x, y) from an XYZ or WMTS-KVP request path."""
    if m := _XYZ.match(urlsplit(path).path):
        return tuple(int(v) for v in m.groups()[:4])
    parts = urlsplit(path)
    if parts.path != "/wmts":
        return None
    q = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
    m = _LAYER.match(q.get("layer", ""))
    try:
        return (int(m.group(1)), int(q["tilematrix"]), int(q["tilecol"]), int(q["tilerow"])) if m else None
    except (KeyError, ValueError):
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real tile servers
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        ts: TileServer = self.server.tileserver
        with ts._lock:
            ts.in_flight += 1
            ts.peak_in_flight = max(ts.peak_in_flight, ts.in_flight)
        try:
            self._serve(ts)
        finally:
            with ts._lock:
                ts.in_flight -= 1

    def _serve(self, ts: TileServer) -> None:
        if self.path == "/_stats":  # for a server running in another process
            with ts._lock:
                stats = {"n_requests": sum(ts.counts.values()), "distinct": len(ts.counts),
                         "outcomes": dict(ts.outcomes), "peak_in_flight": ts.peak_in_flight}
            return self._plain(200, json.dumps(stats).encode())
        if self.path == "/_reset":
            ts.reset_counts()
            return self._plain(200, b"reset")
        key = _parse(self.path)
        if key is None:
            return self._plain(404, b"unknown path")
        fault = ts._decide(key)
        with ts._lock:
            ts.outcomes[fault] += 1
        if ts.latency_s:
            time.sleep(ts.latency_s)
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, no response at all
            self.close_connection = True
            return
        if fault == "500":
            return self._plain(500, b"internal error")
        if fault == "429":
            return self._plain(429, b"slow down", {"Retry-After": ts.faults.retry_after})
        if fault.isdigit():
            return self._plain(int(fault), b"refused")
        data = ts.tile_bytes(key)
        if data is None:
            return self._plain(404, b"no imagery here")
        self.send_response(200)
        self.send_header("Content-Type", "image/png" if ts.fmt == "png" else "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "truncate":  # promise the full length, send half, hang up
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def _plain(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Serve real iss_mini tiles on 127.0.0.1 (test/benchmark server). "
                                             "GET /_stats for counts, /_reset to zero them.")
    ap.add_argument("--port", type=int, default=8077)
    ap.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    ap.add_argument("--p500", type=float, default=0.0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--repeat", metavar="CONTEXT", help="serve every tile from this context, repeated")
    args = ap.parse_args()
    src = RepeatingTiles(context=args.repeat) if args.repeat else None
    srv = TileServer(src, fmt=args.format, port=args.port, faults=Faults(p_500=args.p500),
                     latency_s=args.latency_ms / 1000).start()
    print(f"serving {srv.template} and {srv.eox_template}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()

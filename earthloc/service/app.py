"""Web app: a job service that localizes uploaded astronaut photos, and a map page that shows the evidence.

A thin FastAPI layer over the application layer; the model and index are loaded once at start. CPU
work (decoding, encoding, search, refinement) runs in a bounded pool of worker threads
(:class:`earthloc.service.jobs.JobQueue`); endpoints only check input and read state, so pages and tiles
stay responsive while jobs run.

- ``GET /``                         the map page (Leaflet served from ``static/leaflet``: works offline)
- ``GET /api/info``                 model, DB size, basemap zooms/years/extent, upload limits
- ``GET /api/world/{z}/{x}/{y}.jpg`` Blue Marble world tiles (zoom 0..4), the base under everything
- ``GET /api/tiles/{year}/{z}/{x}/{y}`` tiles cut from the index's own DB images, any zoom from the
                                    DB's ``min_zoom`` up (404 where the DB has no image)
- ``POST /api/jobs``                multipart ``photo`` [+ ``nadir_lat``/``nadir_lon``, ``time`` (ISO 8601
                                    UTC), ``altitude_km``, ``top_k``, ``verify``] -> 202 ``{"id": ...}``;
                                    nadir/time may come from an official file name; full queue -> 429
                                    with ``Retry-After``
- ``GET /api/jobs/{id}``            state (queued, running, done, failed), stage and progress; when done
                                    the result: candidates, the map's evidence, an explanation when empty
- ``GET /api/jobs/{id}/result.geojson`` / ``result.kml`` the result as a download

Safety: uploads are capped in bytes while they arrive and in pixels from the header, before decoding;
the format is sniffed from the bytes (JPEG, PNG, TIFF, WebP), not taken from the name or type; job ids
and tile coordinates are validated, static files go through Starlette's ``StaticFiles``. With a
``token`` every ``/api`` route needs ``Authorization: Bearer <token>`` (or ``?token=``, for tiles and
links). Bad input answers 4xx with ``{"detail": "<input>: <problem>"}``.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import shutil
import tempfile
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from earthloc import outputs, webmap
from earthloc.errors import InputError
from earthloc.geo.visibility import DEFAULT_ISS_ALTITUDE_KM, horizon_radius_km
from earthloc.photos import parse_utc, photo_from_file
from earthloc.pipeline import LocateOptions, locate_one, open_locator
from earthloc.records import Localization, Photo
from earthloc.service.jobs import JobQueue, QueueFull
from earthloc.service.map_tiles import DbTiles

log = logging.getLogger("earthloc.service")
STATIC = Path(__file__).with_name("static")
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_SNIFF = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp"}
MAX_TOP_K = 100


@dataclass(frozen=True)
class ServiceOptions:
    """Limits and policy of the service. ``token``: required bearer token (None: open, loopback only);
    ``workers``: jobs run at once; ``max_queued``: jobs waiting beyond those (then 429);
    ``max_upload_bytes`` / ``max_pixels``: upload caps, checked before decoding; ``verify``: default
    for jobs that do not say whether to verify the candidates (and refine the answer's footprint)."""

    token: str | None = None
    workers: int = 1
    max_queued: int = 8
    max_upload_bytes: int = 32 * 2**20
    max_pixels: int = 60_000_000
    verify: bool = True


@dataclass(frozen=True)
class JobResult:
    """A finished job: the localization, what the map draws, and why it is empty when it is."""

    loc: Localization
    evidence: dict
    empty_reason: str | None


def create_app(index_dir: Path, model_name: str | None = None, checkpoint: Path | None = None,
               options: ServiceOptions = ServiceOptions()) -> FastAPI:
    """The app over the index at ``index_dir``; the model defaults to the one the index was built with."""
    locator = open_locator(index_dir, model_name, checkpoint)
    index = locator.index
    if index.precision == "fp32":
        index.shadow(len(locator.query_rotations))  # the search's bf16 copy, made now rather than on the first request
    basemap = DbTiles(index.db_dir) if index.db_dir is not None and index.db_dir.is_dir() else None
    jobs = JobQueue(options.workers, options.max_queued)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        jobs.close()

    app = FastAPI(title="earthloc", summary="Where on Earth was this astronaut photo taken?", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # Swagger UI / ReDoc load from a CDN: not offered offline
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_BodyLimit, max_bytes=options.max_upload_bytes + 64 * 1024)  # + multipart overhead
    if options.token:
        app.add_middleware(_BearerToken, token=options.token)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict:
        return {"model": index.model_name, "descriptor_dim": index.dim, "db_images": len(index),
                "rotations": index.rotations,
                "basemap": None if basemap is None else {
                    "years": list(basemap.years), "zooms": list(basemap.native_zooms), "min_zoom": basemap.min_zoom,
                    "extent": basemap.extent},
                "world": {"max_zoom": webmap.WORLD_MAX_ZOOM},
                "limits": {"max_upload_bytes": options.max_upload_bytes, "max_pixels": options.max_pixels,
                           "max_top_k": MAX_TOP_K},
                "verify_default": options.verify,
                "extent": _index_extent(index)}

    @app.get("/api/world/{z}/{x}/{y}.jpg")
    def world(z: int, x: int, y: int) -> Response:
        if not (0 <= z <= webmap.WORLD_MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
            raise HTTPException(404, f"world tile {z}/{x}/{y}: outside zooms 0..{webmap.WORLD_MAX_ZOOM}")
        return Response(webmap.world_tile(z, x, y), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/tiles/{year}/{z}/{x}/{y}")
    def tile(year: int, z: int, x: int, y: int) -> Response:
        found = None if basemap is None or not 0 <= z <= 24 else basemap.tile(year, z, x, y)
        if found is None:
            raise HTTPException(404, f"tile {z}/{x}/{y} of {year}: no DB image there")
        return Response(found.data, media_type=found.media_type, headers={"Cache-Control": "max-age=86400"})

    @app.post("/api/jobs", status_code=202)
    def submit(photo: UploadFile = File(...), nadir_lat: float | None = Form(None),
               nadir_lon: float | None = Form(None), time: str | None = Form(None),
               altitude_km: float | None = Form(None), top_k: int = Form(10),
               verify: bool | None = Form(None)) -> dict:
        # a plain `def`: FastAPI runs it in its thread pool; it reads headers and bytes only, no decoding
        try:
            data, fmt = _checked_upload(photo, options)
            folder = Path(tempfile.mkdtemp(prefix="earthloc-job-"))
            try:
                path = folder / _safe_name(photo.filename, fmt)
                path.write_bytes(data)
                p = _photo(path, nadir_lat, nadir_lon, time, altitude_km, top_k)
                job = jobs.submit(lambda report: _run(locator, p, top_k, options.verify if verify is None else verify,
                                                      report, folder),
                                  on_failure=lambda err: _failure(err, folder))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        except InputError as err:
            raise HTTPException(400, str(err)) from None
        except QueueFull as err:
            raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after_s)}) from None
        return {"id": job.id, "url": f"api/jobs/{job.id}"}

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str) -> dict:
        state, job = jobs.snapshot(_check_id(job_id)), jobs.get(job_id)
        if state is None or job is None:
            raise HTTPException(404, f"job {job_id}: unknown (or forgotten)")
        if state["state"] == "done":
            res: JobResult = job.result
            record = outputs.to_dict(res.loc)  # the same fields as `earthloc locate --format json`
            state["result"] = {"candidates": record["candidates"], "evidence": res.evidence,
                               "empty_reason": res.empty_reason, "mrf": res.loc.photo.mrf,
                               "nadir": res.loc.photo.nadir, "refined": res.loc.refined_footprint is not None,
                               "verified": record.get("verified"), "confidence": res.loc.confidence,
                               "inliers": res.loc.inliers}
        return state

    @app.get("/api/jobs/{job_id}/result.{fmt}")
    def download(job_id: str, fmt: str) -> Response:
        job = jobs.get(_check_id(job_id))
        if job is None or job.state != "done":
            raise HTTPException(404, f"job {job_id}: no result (unknown, running or failed)")
        if fmt not in ("geojson", "kml"):
            raise HTTPException(404, f"result.{fmt}: offered as result.geojson or result.kml")
        media = {"geojson": "application/geo+json", "kml": "application/vnd.google-earth.kml+xml"}[fmt]
        name = re.sub(r"[^\w.@-]", "_", job.result.loc.photo.mrf)
        return Response(outputs.render([job.result.loc], fmt), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})

    return app


# --- input checks (headers and bytes only: cheap, before any decoding) ------------------------------
def _checked_upload(upload: UploadFile, options: ServiceOptions) -> tuple[bytes, str]:
    """The upload's bytes and its sniffed format; InputError when too large, not an image we read, or
    over the pixel cap (from the header)."""
    name = _safe_name(upload.filename, None)
    data = upload.file.read(options.max_upload_bytes + 1)
    if len(data) > options.max_upload_bytes:
        raise InputError(name, f"larger than the {options.max_upload_bytes // 2**20} MiB upload limit")
    fmt = next((f for magic, f in _SNIFF.items() if data.startswith(magic)), None)
    if fmt is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WEBP"
    if fmt is None:
        raise InputError(name, "not a JPEG, PNG, TIFF or WebP image (judged from its bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                w, h = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(name, f"not a readable {fmt} image") from None
    if w * h > options.max_pixels:
        raise InputError(name, f"image is {w}x{h} px, over the {options.max_pixels:,} px limit")
    return data, fmt


def _safe_name(filename: str | None, fmt: str | None) -> str:
    """The upload's base name with anything but letters, digits and ``@._-`` replaced (official names
    survive intact); no directory part; the sniffed format's suffix when the name has no image suffix."""
    base = PurePosixPath((filename or "upload").replace("\\", "/")).name
    base = re.sub(r"[^\w@.-]", "_", base)[-200:].lstrip(".") or "upload"
    if fmt is not None and Path(base).suffix.lower() not in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"):
        base += _SUFFIX[fmt]
    return base


def _photo(path: Path, nadir_lat: float | None, nadir_lon: float | None, time: str | None,
           altitude_km: float | None, top_k: int) -> Photo:
    """The job's photo: metadata from an official file name, overridden by the form's fields."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InputError("top_k", f"must be within 1..{MAX_TOP_K}, got {top_k}")
    if (nadir_lat is None) != (nadir_lon is None):
        raise InputError("nadir", "give both nadir_lat and nadir_lon")
    nadir = None if nadir_lat is None or nadir_lon is None else (nadir_lat, nadir_lon)
    if nadir is not None and not (-90 <= nadir[0] <= 90 and -180 <= nadir[1] <= 180):
        raise InputError("nadir", f"{nadir} is not a valid latitude, longitude")
    if altitude_km is not None and not 100 <= altitude_km <= 2000:
        raise InputError("altitude_km", f"must be within 100..2000 km, got {altitude_km}")
    try:
        photo = photo_from_file(path)
    except InputError as err:
        raise InputError(path.name, err.problem) from None
    if nadir is not None:
        photo = replace(photo, nadir=nadir)
    if time:
        photo = replace(photo, time=parse_utc(time, "time"), extra={**photo.extra, "time_precision": "exact"})
    if altitude_km is not None:
        photo = replace(photo, altitude_km=altitude_km)
    if photo.nadir is None and (photo.time is None or photo.extra.get("time_precision") == "day"):
        raise InputError("nadir", "unknown: give the ISS nadir (nadir_lat, nadir_lon) or the exact exposure time "
                                  "(time), or upload the photo under its official file name")
    return photo


def _check_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise HTTPException(404, "job id: not a job id")
    return job_id


# --- the job ---------------------------------------------------------------------------------------
def _run(locator, photo: Photo, top_k: int, verify: bool, report, folder: Path) -> JobResult:
    """Localize one uploaded photo (in a worker thread); the job's folder is removed at the end."""
    try:
        options = LocateOptions(top_k=top_k, verify=verify)
        loc, prepared = locate_one(locator, photo, options, on_event=report)
        report("drawing", 0, 1)
        img = prepared.image  # decoded once by the pipeline; no longer needed there
        img.thumbnail((2 * webmap.PHOTO_PX, 2 * webmap.PHOTO_PX))
        return JobResult(loc, webmap.evidence(loc, photo=np.asarray(img)), _empty_reason(locator, loc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _empty_reason(locator, loc: Localization) -> str | None:
    """Why a localization has no candidate, in words (None when it has some)."""
    if loc.candidates:
        return None
    p, extent = loc.photo, _index_extent(locator.index)
    if p.nadir is None or extent is None or locator.visible_mask(p).any():
        return loc.error or "No candidate was found."
    radius = horizon_radius_km(p.altitude_km or DEFAULT_ISS_ALTITUDE_KM)
    (s, w), (n, e) = extent
    return (f"No DB image of this index lies in the area visible from the ISS: the disk of {radius:,.0f} km "
            f"around the nadir {p.nadir[0]:.1f}, {p.nadir[1]:.1f}. The index covers latitudes {s:.1f}..{n:.1f} "
            f"and longitudes {w:.1f}..{e:.1f}; a photo taken elsewhere needs a DB of that region.")


def _failure(err: BaseException, folder: Path) -> str:
    """A failed job's message: input problems as they are (temp paths cut), anything else generic."""
    if isinstance(err, InputError | OSError | ValueError):
        return str(err).replace(str(folder) + "/", "")
    log.exception("job failed", exc_info=err)
    return "internal error while locating this photo (see the server log)"


def _index_extent(index) -> list[list[float]] | None:
    if not len(index):
        return None
    lat, lon = index.centre_lat, index.centre_lon
    return [[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]]


# --- ASGI middleware -----------------------------------------------------------------------------------
class _BodyLimit:
    """Refuses (413) a request body over ``max_bytes``, from Content-Length or while it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        detail = f"upload: larger than the {self.max_bytes // 2**20} MiB limit"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while parsing the body on
                raise HTTPException(413, detail)
            return msg

        await self.app(scope, counted, send)


class _BearerToken:
    """Every ``/api`` route needs ``Authorization: Bearer <token>`` or ``?token=<token>``; the page and
    its static files (no data) are open so a browser can load them."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api") and not self._allowed(Request(scope)):
            await JSONResponse({"detail": "token: missing or wrong bearer token"}, status_code=401,
                               headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token", "")
        return secrets.compare_digest(given.encode(), self.token.encode())

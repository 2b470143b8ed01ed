"""Web app: upload an astronaut photo with its ISS nadir (or exposure time), get candidates on a map.

A thin FastAPI layer over :class:`earthloc.locate.Locator`; the model and index are loaded once at start.

- ``GET /``             the map page (Leaflet, served from ``static/leaflet``: it works offline)
- ``GET /api/info``     model name, descriptor size, number of DB images, the DB's years/zooms/extent
- ``GET /api/tiles/{year}/{z}/{x}/{y}.jpg``  256-px Web-Mercator tiles cut from the index's own DB images:
                        the page's offline basemap (404 where the DB has no image)
- ``POST /api/locate``  multipart ``photo`` + ``nadir_lat``/``nadir_lon`` or ``time`` (ISO 8601 UTC)
                        [+ ``top_k``, ``altitude_km``] -> GeoJSON FeatureCollection (as ``earthloc locate``)

Bad input (not an image, no nadir/time, bad numbers) answers 400 with ``{"detail": "<what is wrong>"}``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Response, UploadFile
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from earthloc import outputs
from earthloc.errors import InputError
from earthloc.photos import parse_utc
from earthloc.records import Photo

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
_PAGE = Path(__file__).with_name("static") / "index.html"


def create_app(index_dir: Path, model_name: str | None = None, checkpoint: Path | None = None) -> FastAPI:
    """The app over the index at ``index_dir``; the model defaults to the one the index was built with."""
    from earthloc.index.store import Index
    from earthloc.locate import Locator
    from earthloc.models.registry import load_model

    index = Index.open(index_dir)
    model = load_model(model_name or index.model_name, checkpoint=checkpoint)
    locator = Locator(index, model)
    if index.precision == "fp32":
        index.shadow(len(locator.query_rotations))  # the search's bf16 copy, made now rather than on the first request
    lock = threading.Lock()  # one encode at a time: torch already uses every core
    basemap = _db_tiles(index)
    app = FastAPI(title="earthloc", summary="Where on Earth was this astronaut photo taken?")
    app.mount("/static", StaticFiles(directory=_PAGE.parent), name="static")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _PAGE.read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict:
        lat, lon = index.centre_lat, index.centre_lon
        return {"model": index.model_name, "descriptor_dim": index.dim, "db_images": len(index),
                "rotations": index.rotations,
                "basemap": None if basemap is None else {"years": list(basemap.years), "zooms": list(basemap.native_zooms)},
                "extent": [[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]] if len(index) else None}

    @app.get("/api/tiles/{year}/{z}/{x}/{y}.jpg")
    def tile(year: int, z: int, x: int, y: int) -> Response:
        if basemap is None or not basemap.covers(z, x, y, year):
            raise HTTPException(404, f"no DB image holds tile {z}/{x}/{y} of {year}")
        from earthloc.db.build import encode_jpeg

        return Response(encode_jpeg(basemap.tile(z, x, y, year)), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=86400"})

    @app.post("/api/locate")
    async def locate(photo: UploadFile = File(...), nadir_lat: float | None = Form(None),
                     nadir_lon: float | None = Form(None), time: str | None = Form(None),
                     altitude_km: float | None = Form(None), top_k: int = Form(10)) -> dict:
        from PIL import Image, UnidentifiedImageError

        from earthloc.models.preprocess import load_image

        data = await photo.read(MAX_UPLOAD_BYTES + 1)
        name = photo.filename or "upload"
        try:
            if len(data) > MAX_UPLOAD_BYTES:
                raise InputError(name, f"larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
            if not 1 <= top_k <= 100:
                raise InputError("top_k", "must be within 1..100")
            if (nadir_lat is None) != (nadir_lon is None):
                raise InputError("nadir", "give both nadir_lat and nadir_lon")
            nadir = None if nadir_lat is None else (nadir_lat, nadir_lon)
            if nadir is not None and not (-90 <= nadir[0] <= 90 and -180 <= nadir[1] <= 180):
                raise InputError("nadir", f"{nadir} is not a valid lat, lon")
            when = parse_utc(time) if time else None
            try:
                Image.open(io.BytesIO(data)).verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                raise InputError(name, f"not a readable image ({err})") from None
            tmp = Path(_spool(data, name))
            try:
                img = load_image(tmp)
            finally:
                tmp.unlink(missing_ok=True)
            p = locator.resolve(Photo(mrf=Path(name).stem, nadir=nadir, time=when, altitude_km=altitude_km))
            with lock:
                desc = locator.encode([img])[0]
            loc = locator.rank(p, desc, top_k)
        except InputError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None
        return outputs.to_geojson([loc])

    return app


def _spool(data: bytes, name: str) -> str:
    """Write an upload to a temp file so it goes through the same loader (and guards) as files on disk."""
    import tempfile

    fd, path = tempfile.mkstemp(suffix=Path(name).suffix or ".img", prefix="earthloc-upload-")
    with open(fd, "wb") as f:
        f.write(data)
    return path


def _db_tiles(index):
    """The index's DB folder as a tile source (the offline basemap), or None when it is not on this machine."""
    from earthloc.sources.official import OfficialSource

    if index.db_dir is None or not index.db_dir.is_dir():
        return None
    try:
        return OfficialSource(index.db_dir)
    except InputError:
        return None

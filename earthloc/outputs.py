"""Writers for localization results: JSON lines, GeoJSON, CSV, KML and an HTML map (folium/Leaflet).

JSON lines is the lossless one (it round-trips through :func:`read_jsonl`, which batch runs use to
resume); the others are for GIS tools and people. Coordinates: GeoJSON/KML use (lon, lat) degrees
(WGS84), polygons closed and counter-clockwise; CSV gives the footprint as WKT (lon lat).
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.polygon import orient

from earthloc.atomic import write_text
from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate, Localization, Photo
from earthloc.webmap import write_map

FORMATS = ("jsonl", "json", "geojson", "csv", "kml", "html")


# --- records <-> plain dicts (lossless) ---------------------------------------------------
def _fp(f: Footprint | None) -> list | None:
    return None if f is None else [[float(a), float(o)] for a, o in f.corners]


def _unfp(c) -> Footprint | None:
    return None if c is None else Footprint(tuple((float(a), float(o)) for a, o in c))


def _candidate_footprint(c: dict) -> Footprint:
    """A stored candidate's footprint (every candidate is written with one)."""
    fp = _unfp(c.get("footprint"))
    if fp is None:
        raise InputError(f"candidate {c.get('tile')}", "no footprint in the stored record")
    return fp


def _pair(p) -> tuple[float, float] | None:
    return None if p is None else (float(p[0]), float(p[1]))


def photo_key(photo: Photo) -> str:
    """Identifies a photo in a batch (progress files): its path if known, else its MRF."""
    return str(photo.path) if photo.path else photo.mrf


def to_dict(loc: Localization) -> dict:
    """A JSON-ready dict of one localization (candidates ranked best first)."""
    p = loc.photo
    return {
        "mrf": p.mrf,
        "path": str(p.path) if p.path else None,
        "time": p.time.isoformat() if p.time else None,
        "nadir": list(p.nadir) if p.nadir else None,
        "altitude_km": p.altitude_km,
        "true_centre": list(p.centre) if p.centre else None,
        "true_footprint": _fp(p.footprint),
        "error": loc.error,
        "candidates": [
            {"rank": i + 1, "tile": c.tile.name, "zoom": c.tile.zoom, "year": c.year,
             "rotation_deg": c.rotation_deg, "score": float(c.score),
             "centre": list(c.tile.centre), "footprint": _fp(c.footprint), "path": c.path}
            for i, c in enumerate(loc.candidates)
        ],
        "refined_footprint": _fp(loc.refined_footprint),
        "verified": loc.verified,
        "confidence": loc.confidence,
        "inliers": loc.inliers,
    }


def from_dict(d: dict) -> Localization:
    """Inverse of :func:`to_dict`."""
    photo = Photo(
        mrf=d["mrf"], path=Path(d["path"]) if d.get("path") else None,
        time=datetime.fromisoformat(d["time"]) if d.get("time") else None,
        nadir=_pair(d.get("nadir")), altitude_km=d.get("altitude_km"),
        centre=_pair(d.get("true_centre")), footprint=_unfp(d.get("true_footprint")),
    )
    cands = tuple(
        Candidate(tile=TileBlock.from_name(c["tile"]), year=int(c["year"]), rotation_deg=int(c["rotation_deg"]),
                  score=float(c["score"]), footprint=_candidate_footprint(c), path=c.get("path"))
        for c in d.get("candidates", [])
    )
    return Localization(photo=photo, candidates=cands, refined_footprint=_unfp(d.get("refined_footprint")),
                        confidence=d.get("confidence"), inliers=d.get("inliers"), error=d.get("error"),
                        verified=d.get("verified"))


# --- JSON lines ---------------------------------------------------------------------------
def append_jsonl(path: Path, loc: Localization, **fields) -> None:
    """Append one line and flush it to disk (a batch's progress file: append-only, crash-safe per line).
    ``fields``: extra JSON keys stored on the line (e.g. the digest of what produced the record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**to_dict(loc), **fields}) + "\n")
        f.flush()


def drop_torn_tail(path: Path) -> None:
    """Cut a torn last line (a crash mid-write) off a JSON-lines file, so the next append starts a line."""
    with open(path, "rb+") as f:
        size = f.seek(0, 2)
        if not size:
            return
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):  # a torn line longer than 64 KiB: find its start the slow way
            f.seek(0)
            whole = f.read()
            f.truncate(whole.rfind(b"\n") + 1)
            return
        f.truncate(size - len(tail) + cut + 1)


def read_jsonl_rows(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; a torn last line (crash mid-write) is ignored."""
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise InputError(path, f"line {i + 1} is not valid JSON") from None
    return out


def read_jsonl(path: Path) -> list[Localization]:
    """Localizations of a JSON-lines file; a torn last line (crash mid-write) is ignored."""
    return [from_dict(row) for row in read_jsonl_rows(path)]


def to_jsonl(locs: Iterable[Localization]) -> str:
    """JSON lines, one localization per line (lossless: :func:`read_jsonl` reads them back)."""
    return "".join(json.dumps(to_dict(loc)) + "\n" for loc in locs)


# --- GeoJSON ------------------------------------------------------------------------------
def lonlat_parts(f: Footprint) -> list[Polygon]:
    """The footprint as counter-clockwise (lon, lat) polygons within [-180, 180]: one, or two when it
    straddles the antimeridian (cut there, as RFC 7946 3.1.9 asks of GeoJSON; used for KML and WKT too)."""
    poly = f.polygon_lonlat  # longitudes unwrapped around the first corner: may pass +-180
    west, _, east, _ = poly.bounds
    if -180 <= west and east <= 180:
        return [orient(poly, sign=1.0)]
    parts = []
    for turn in (-1, 0, 1):  # the piece in each 360-degree window, shifted back into [-180, 180]
        piece = poly.intersection(box(-180 + 360 * turn, -90, 180 + 360 * turn, 90))
        for p in getattr(piece, "geoms", [piece]):
            if isinstance(p, Polygon) and not p.is_empty:
                parts.append(orient(translate(p, xoff=-360 * turn), sign=1.0))
    return parts


def _shape(f: Footprint) -> Polygon | MultiPolygon:
    parts = lonlat_parts(f)
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _poly(f: Footprint) -> dict:
    """GeoJSON geometry of a footprint: a Polygon, or a MultiPolygon cut at the antimeridian."""
    return mapping(_shape(f))


def _answer(loc: Localization) -> dict:
    """The photo-level verification fields every output carries."""
    return {"verified": loc.verified, "confidence": loc.confidence, "inliers": loc.inliers}


def to_geojson(locs: Iterable[Localization]) -> dict:
    """A FeatureCollection: per photo one Polygon per candidate (``kind`` "candidate", with rank,
    tile, year, rotation, score), a Point at the nadir (``kind`` "nadir"), the refined footprint if
    any, and the ground truth (``kind`` "true_centre"/"true_footprint") when the photo carries it."""
    feats = []
    for loc in locs:
        p = loc.photo
        base: dict[str, Any] = {"mrf": p.mrf, "path": str(p.path) if p.path else None}
        if loc.error:
            feats.append({"type": "Feature", "geometry": None, "properties": {**base, "kind": "error", "error": loc.error}})
        for i, c in enumerate(loc.candidates):
            feats.append({"type": "Feature", "geometry": _poly(c.footprint), "properties": {
                **base, "kind": "candidate", "rank": i + 1, "tile": c.tile.name, "year": c.year,
                "rotation_deg": c.rotation_deg, "score": round(float(c.score), 6), **(_answer(loc) if i == 0 else {})}})
        if loc.refined_footprint is not None:
            feats.append({"type": "Feature", "geometry": _poly(loc.refined_footprint), "properties": {
                **base, "kind": "refined_footprint", **_answer(loc)}})
        if p.nadir:
            feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.nadir[1], p.nadir[0]]},
                          "properties": {**base, "kind": "nadir", "altitude_km": p.altitude_km}})
        if p.centre:
            feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.centre[1], p.centre[0]]},
                          "properties": {**base, "kind": "true_centre"}})
        if p.footprint is not None:
            feats.append({"type": "Feature", "geometry": _poly(p.footprint), "properties": {**base, "kind": "true_footprint"}})
    return {"type": "FeatureCollection", "features": feats}


# --- CSV ----------------------------------------------------------------------------------
CSV_COLUMNS = ("mrf", "path", "rank", "tile", "year", "rotation_deg", "score", "centre_lat", "centre_lon",
               "footprint_wkt", "nadir_lat", "nadir_lon", "error", "verified", "confidence", "inliers")


def to_csv(locs: Iterable[Localization]) -> str:
    """One row per candidate (an error row, with empty candidate columns, for a failed photo); the
    photo's ``verified``, ``confidence`` and ``inliers`` on each of its rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for loc in locs:
        p = loc.photo
        nadir = list(p.nadir) if p.nadir else ["", ""]
        head = [p.mrf, str(p.path) if p.path else ""]
        tail = ["" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v).lower()) for v in
                (loc.verified, loc.confidence, loc.inliers)]
        if loc.error or not loc.candidates:
            w.writerow(head + [""] * 8 + nadir + [loc.error or "no candidate"] + tail)
        for i, c in enumerate(loc.candidates):
            lat, lon = c.tile.centre
            w.writerow(head + [i + 1, c.tile.name, c.year, c.rotation_deg, f"{c.score:.6f}", f"{lat:.6f}",
                               f"{lon:.6f}", _shape(c.footprint).wkt] + nadir + [""] + tail)
    return buf.getvalue()


# --- KML ----------------------------------------------------------------------------------
_KML_NS = "http://www.opengis.net/kml/2.2"


def _kml_ring(parent: ET.Element, f: Footprint) -> None:
    parts = lonlat_parts(f)
    if len(parts) > 1:  # across the antimeridian: one polygon per side
        parent = ET.SubElement(parent, "MultiGeometry")
    for part in parts:
        poly = ET.SubElement(parent, "Polygon")
        outer = ET.SubElement(ET.SubElement(poly, "outerBoundaryIs"), "LinearRing")
        ET.SubElement(outer, "coordinates").text = " ".join(f"{x:.6f},{y:.6f},0" for x, y in part.exterior.coords)


def _kml_point(parent: ET.Element, lat: float, lon: float) -> None:
    ET.SubElement(ET.SubElement(parent, "Point"), "coordinates").text = f"{lon:.6f},{lat:.6f},0"


def _answer_text(loc: Localization) -> str:
    conf = "n/a" if loc.confidence is None else f"{loc.confidence:.3f}"
    verified = {True: "verified", False: "not verified", None: "unverified"}[loc.verified]
    return f"{verified}, confidence {conf}, {loc.inliers or 0} inliers"


def to_kml(locs: Iterable[Localization]) -> str:
    """KML 2.2: a Folder per photo with its candidate footprints, nadir and refined footprint."""
    ET.register_namespace("", _KML_NS)
    root = ET.Element("kml", xmlns=_KML_NS)
    doc = ET.SubElement(root, "Document")
    ET.SubElement(doc, "name").text = "earthloc localizations"
    for loc in locs:
        folder = ET.SubElement(doc, "Folder")
        ET.SubElement(folder, "name").text = loc.photo.mrf
        if loc.error:
            ET.SubElement(folder, "description").text = f"error: {loc.error}"
        elif loc.verified is not None or loc.inliers is not None:
            ET.SubElement(folder, "description").text = _answer_text(loc)
        for i, c in enumerate(loc.candidates):
            pm = ET.SubElement(folder, "Placemark")
            ET.SubElement(pm, "name").text = f"#{i + 1} {c.tile.name} {c.year}"
            ET.SubElement(pm, "description").text = f"score {c.score:.4f}, rotation {c.rotation_deg} deg"
            _kml_ring(pm, c.footprint)
        if loc.refined_footprint is not None:
            pm = ET.SubElement(folder, "Placemark")
            ET.SubElement(pm, "name").text = "refined footprint"
            ET.SubElement(pm, "description").text = _answer_text(loc)
            _kml_ring(pm, loc.refined_footprint)
        if loc.photo.nadir:
            pm = ET.SubElement(folder, "Placemark")
            ET.SubElement(pm, "name").text = "ISS nadir"
            _kml_point(pm, *loc.photo.nadir)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- HTML map -----------------------------------------------------------------------------
def write_html_map(locs: Sequence[Localization], path: Path, max_candidates: int = 5) -> None:
    """A single-file offline map of the evidence (:func:`earthloc.webmap.write_map`): per photo its best
    candidates drawn with their own DB images on their footprints (best outlined red), the photo warped
    onto its refined footprint (opacity slider), the ISS nadir and visible disk, NASA's centre and
    footprint when known, and a legend, over NASA's Blue Marble; Leaflet and every image are inlined."""
    write_map(locs, Path(path), max_candidates)


# --- dispatch -----------------------------------------------------------------------------
def format_of(path: Path) -> str:
    """Output format from a file extension (.jsonl/.json/.geojson/.csv/.kml/.html)."""
    ext = Path(path).suffix.lower().lstrip(".")
    fmt = {"htm": "html"}.get(ext, ext)
    if fmt not in FORMATS:
        raise InputError(path, f"unknown output format {ext!r}; use one of {', '.join(FORMATS)}")
    return fmt


def render(locs: Sequence[Localization], fmt: str) -> str:
    """Text of ``locs`` in ``fmt`` (all formats except html)."""
    if fmt == "jsonl":
        return to_jsonl(locs)
    if fmt == "json":
        return json.dumps([to_dict(loc) for loc in locs], indent=1) + "\n"
    if fmt == "geojson":
        return json.dumps(to_geojson(locs)) + "\n"
    if fmt == "csv":
        return to_csv(locs)
    if fmt == "kml":
        return to_kml(locs)
    raise InputError("format", f"unknown format {fmt!r}; use one of {', '.join(f for f in FORMATS if f != 'html')}")


def write(locs: Sequence[Localization], path: Path, fmt: str | None = None) -> None:
    """Write ``locs`` to ``path`` in ``fmt`` (default: from the extension), atomically."""
    fmt = fmt or format_of(path)
    if fmt == "html":
        write_html_map(locs, Path(path))
    else:
        write_text(path, render(locs, fmt))

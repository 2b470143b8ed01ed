"""Output writers on real records: the iss_mini photos (NASA footprints, centres, nadirs) and their
real EarthMatch retrieval candidates (iss_mini/candidates.csv)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, shape

from earthloc import outputs
from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.records import Candidate, Localization, Photo


@pytest.fixture(scope="module")
def locs(shared_data) -> list[Localization]:
    q = pd.read_csv(shared_data / "iss_mini" / "queries.csv")
    c = pd.read_csv(shared_data / "iss_mini" / "candidates.csv")
    c = c[c.bounds_known == 1]
    out = []
    for r in q.head(6).itertuples():
        fp = Footprint(((r.ll_lat, r.ll_lon), (r.ul_lat, r.ul_lon), (r.ur_lat, r.ur_lon), (r.lr_lat, r.lr_lon)))
        photo = Photo(mrf=r.mrf, path=shared_data / "iss_mini" / "queries" / f"{r.mrf}.jpg",
                      nadir=(r.nadir_lat, r.nadir_lon), altitude_km=415.0, centre=(r.center_lat, r.center_lon),
                      footprint=fp)
        cands = []
        for k in c[c.mrf == r.mrf].sort_values("rank").itertuples():
            tile = TileBlock(int(k.zoom), int(k.tile_row), int(k.tile_col))
            cands.append(Candidate(tile, 2018, int(k.retrieval_rotation_deg), 1.0 - 0.01 * k.rank,
                                   Footprint(tile.corners)))
        out.append(Localization(photo, tuple(cands)))
    bad = Photo(mrf="broken", path=shared_data / "iss_mini" / "missing.jpg")
    out.append(Localization(bad, (), error="cannot read image"))
    return out


def test_jsonl_roundtrip_and_torn_last_line(locs, tmp_path):
    p = tmp_path / "run.jsonl"
    for loc in locs:
        outputs.append_jsonl(p, loc)
    assert outputs.read_jsonl(p) == locs
    with open(p, "a") as f:
        f.write('{"mrf": "half')  # a crash mid-line
    assert outputs.read_jsonl(p) == locs


def test_geojson_polygons_are_lonlat_closed_ccw(locs, tmp_path):
    outputs.write(locs, tmp_path / "r.geojson")
    fc = json.loads((tmp_path / "r.geojson").read_text())
    assert fc["type"] == "FeatureCollection"
    cands = [f for f in fc["features"] if f["properties"]["kind"] == "candidate"]
    assert len(cands) == sum(len(loc.candidates) for loc in locs)
    by_tile = {c.tile.name: c for loc in locs for c in loc.candidates}
    for f in cands:
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        poly = shape(f["geometry"])
        assert shapely.LinearRing(ring).is_ccw
        lat, lon = by_tile[f["properties"]["tile"]].tile.centre
        assert poly.contains(Point(lon, lat))  # (lon, lat) order
    nadirs = [f for f in fc["features"] if f["properties"]["kind"] == "nadir"]
    assert [n["geometry"]["coordinates"] for n in nadirs] == [[loc.photo.nadir[1], loc.photo.nadir[0]]
                                                              for loc in locs if loc.photo.nadir]
    truth = [f for f in fc["features"] if f["properties"]["kind"] == "true_footprint"]
    for f, loc in zip(truth, locs):
        assert shape(f["geometry"]).contains(Point(loc.photo.centre[1], loc.photo.centre[0])) == \
            loc.photo.footprint.contains(*loc.photo.centre)
    assert any(f["properties"]["kind"] == "error" for f in fc["features"])


def test_csv_rows_and_wkt(locs, tmp_path):
    outputs.write(locs, tmp_path / "r.csv")
    df = pd.read_csv(tmp_path / "r.csv")
    assert list(df.columns) == list(outputs.CSV_COLUMNS)
    assert len(df) == sum(len(loc.candidates) for loc in locs) + 1
    err = df[df.error.notna()]
    assert err.mrf.tolist() == ["broken"]
    ok = df[df.error.isna()]
    for r in ok.itertuples():
        assert shapely.from_wkt(r.footprint_wkt).contains(Point(r.centre_lon, r.centre_lat))


def test_kml_parses_with_one_folder_per_photo(locs, tmp_path):
    outputs.write(locs, tmp_path / "r.kml")
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    root = ET.parse(tmp_path / "r.kml").getroot()
    folders = root.findall(".//k:Folder", ns)
    assert [f.find("k:name", ns).text for f in folders] == [loc.photo.mrf for loc in locs]
    rings = root.findall(".//k:LinearRing/k:coordinates", ns)
    assert len(rings) == sum(len(loc.candidates) for loc in locs)
    for r in rings:
        pts = [tuple(map(float, p.split(","))) for p in r.text.split()]
        assert pts[0] == pts[-1] and all(-180 <= x <= 180 and -90 <= y <= 90 for x, y, _ in pts)


def test_html_map_embeds_every_photo_and_footprint_and_opens_offline(locs, tmp_path):
    outputs.write(locs, tmp_path / "map.html")
    html = (tmp_path / "map.html").read_text()
    data = json.loads(html.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    assert [ev["mrf"] for ev in data["photos"]] == [loc.photo.mrf for loc in locs]
    for ev, loc in zip(data["photos"], locs):
        assert [c["tile"] for c in ev["candidates"]] == [c.tile.name for c in loc.candidates[:5]]
        for c, want in zip(ev["candidates"], loc.candidates):
            np.testing.assert_allclose(c["ring"], want.footprint.corners, atol=1e-6)
        if loc.photo.nadir:
            assert ev["nadir"] == list(loc.photo.nadir) and ev["true_centre"] == list(loc.photo.centre)
    assert data["photos"][-1]["error"] == "cannot read image"
    # opens offline: Leaflet, the renderer and the Blue Marble tiles inlined, nothing linked from the web
    assert "<script src=" not in html and "<link" not in html
    assert "tile.openstreetmap.org" not in html and "earthloc.drawEvidence" in html
    assert all(v.startswith("data:image/jpeg;base64,") for v in data["world"]["tiles"].values())
    assert {"0/0/0", "1/1/0", "2/3/3"} <= set(data["world"]["tiles"])


def test_unknown_format_is_input_error(locs, tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        outputs.write(locs, tmp_path / "r.shp")


def test_geojson_cuts_a_footprint_at_the_antimeridian(locs, tmp_path):
    """A real NASA footprint moved east until it straddles 180 degrees comes out as a MultiPolygon with
    every longitude in [-180, 180] and the same geodesic area (RFC 7946 3.1.9)."""
    from dataclasses import replace

    from pyproj import Geod

    fp = locs[0].photo.footprint
    shift = 180.0 - float(fp.lons.mean())  # same shape and latitude, centred on the antimeridian
    moved = Footprint(tuple((lat, (lon + shift + 180) % 360 - 180) for lat, lon in zip(fp.lats, fp.lons)))
    photo = replace(locs[0].photo, footprint=moved, centre=None, nadir=None)
    outputs.write([Localization(photo, ())], tmp_path / "am.geojson")
    (feat,) = json.loads((tmp_path / "am.geojson").read_text())["features"]
    geom = feat["geometry"]
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    lons = [x for poly in geom["coordinates"] for ring in poly for x, _ in ring]
    assert min(lons) >= -180 and max(lons) <= 180 and min(lons) < -179 and max(lons) > 179
    geod = Geod(ellps="WGS84")
    area = sum(abs(geod.geometry_area_perimeter(p)[0]) for p in shape(geom).geoms) / 1e6
    assert area == pytest.approx(moved.area_km2, rel=1e-3)
    for poly in geom["coordinates"]:
        assert shapely.LinearRing(poly[0]).is_ccw
    # KML: a MultiGeometry of two polygons, longitudes within [-180, 180] as KML requires
    cand = Localization(photo, (Candidate(locs[0].candidates[0].tile, 2018, 0, 0.5, moved),))
    outputs.write([cand], tmp_path / "am.kml")
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    multi = ET.parse(tmp_path / "am.kml").getroot().findall(".//k:MultiGeometry", ns)
    assert len(multi) == 1  # the candidate (KML has no ground-truth layer)
    coords = [c.text for c in multi[0].findall(".//k:coordinates", ns)]
    assert len(coords) == 2
    assert all(-180 <= float(p.split(",")[0]) <= 180 for text in coords for p in text.split())
    outputs.write([cand], tmp_path / "am.csv")
    assert pd.read_csv(tmp_path / "am.csv").footprint_wkt[0].startswith("MULTIPOLYGON")

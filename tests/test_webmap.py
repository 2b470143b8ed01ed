"""The map evidence on real data: Blue Marble world tiles, the visible disk, the photo warped onto its
footprint (a real ISS photo on NASA's footprint), candidate thumbnails of real images."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from earthloc import webmap
from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.geo.tiles import TileBlock, fractional_tile
from earthloc.records import Candidate, Localization, Photo


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.fixture(scope="module")
def photo_row(shared_data):
    q = pd.read_csv(shared_data / "iss_mini" / "queries.csv").set_index("mrf")
    return q.loc["ISS050-E-70536"], shared_data / "iss_mini" / "queries" / "ISS050-E-70536.jpg"


def test_world_tiles_are_blue_marble_in_web_mercator():
    """Tile pixels come from the Blue Marble pixel at the same lon/lat: the Sahara is sand, the
    Pacific dark blue, Antarctica white (rows follow Mercator latitudes, not plate carrée)."""
    bm = np.asarray(Image.open(webmap.bluemarble_path()).convert("RGB"), dtype=np.float64)
    h, w = bm.shape[:2]
    for lat, lon, what in ((23.0, 12.0, "sand"), (0.0, -150.0, "ocean"), (-80.0, 30.0, "ice"), (55.0, 40.0, "land")):
        z = 4
        fx, fy = fractional_tile(lon, lat, z)
        tile = np.asarray(Image.open(io.BytesIO(webmap.world_tile(z, int(fx), int(fy)))), dtype=np.float64)
        px = tile[int((fy % 1) * 256), int((fx % 1) * 256)]
        want = bm[int((90 - lat) / 180 * h), int((lon + 180) / 360 * w)]
        assert np.abs(px - want).max() < 30, (what, px, want)
    sand = np.asarray(Image.open(io.BytesIO(webmap.world_tile(2, 2, 1))), dtype=np.float64)  # N Africa/Europe
    assert sand.shape == (256, 256, 3)


def test_visible_disk_is_the_searched_circle():
    from earthloc.geo.visibility import horizon_radius_km

    r = horizon_radius_km(415.0)
    ring = np.array(webmap.visible_disk((35.4, 39.3), r))
    d = haversine_km(35.4, 39.3, ring[:, 0], ring[:, 1])
    assert len(ring) == 128 and np.abs(d - r).max() < 0.01  # km: the same sphere as the search


def test_photo_is_warped_onto_its_footprint(photo_row):
    """The real photo on NASA's footprint: opaque inside the quadrilateral, transparent outside, and
    the photo's top-left corner lands at the footprint's UL corner."""
    row, path = photo_row
    fp = Footprint(((row.ll_lat, row.ll_lon), (row.ul_lat, row.ul_lon), (row.ur_lat, row.ur_lon), (row.lr_lat, row.lr_lon)))
    photo = np.asarray(Image.open(path).convert("RGB"))
    uri, ((s, w), (n, e)) = webmap.warp_photo(photo, fp)
    img = np.asarray(_decode(uri).convert("RGBA"))
    assert max(img.shape[:2]) == webmap.PHOTO_PX
    lats, lons = fp.lats, fp.lons
    assert (s, w, n, e) == pytest.approx((min(lats), min(lons), max(lats), max(lons)), abs=1e-3)

    def px(lat, lon):  # map pixel of a lon/lat inside the overlay (linear in Mercator)
        x, y = fractional_tile(np.array([lon, w, e]), np.array([lat, n, s]), 0)
        return int((y[0] - y[1]) / (y[2] - y[1]) * (img.shape[0] - 1)), int((x[0] - x[1]) / (x[2] - x[1]) * (img.shape[1] - 1))

    cy, cx = px(float(np.mean(lats)), float(np.mean(lons)))
    assert img[cy, cx, 3] == 255
    assert img[0, 0, 3] == 0 or img[-1, -1, 3] == 0  # a rotated quadrilateral leaves bbox corners empty
    ty, tx = px(row.ul_lat, row.ul_lon)
    inside = img[max(ty - 6, 0):ty + 7, max(tx - 6, 0):tx + 7]
    inside = inside[inside[..., 3] == 255][:, :3].astype(float)
    assert len(inside) and np.abs(inside.mean(axis=0) - photo[:12, :12].reshape(-1, 3).mean(axis=0)).max() < 40


def test_evidence_of_a_localization(photo_row, shared_data):
    row, path = photo_row
    fp = Footprint(((row.ll_lat, row.ll_lon), (row.ul_lat, row.ul_lon), (row.ur_lat, row.ur_lon), (row.lr_lat, row.lr_lon)))
    ctx = sorted((shared_data / "iss_mini" / "contexts").glob("*.jpg"))[0]  # a real JPEG to thumbnail
    tile = TileBlock(14, 6410, 9928)
    cand = Candidate(tile, 2018, 90, 0.5, Footprint(tile.corners), path=str(ctx))
    photo = Photo(mrf=row.name, path=path, nadir=(row.nadir_lat, row.nadir_lon), altitude_km=420.0,
                  centre=(row.center_lat, row.center_lon), footprint=fp)
    ev = webmap.evidence(Localization(photo, (cand,), refined_footprint=fp, confidence=0.9, inliers=120))
    thumb = _decode(ev["candidates"][0]["image"])
    assert thumb.format == "JPEG" and max(thumb.size) == webmap.THUMB_PX
    assert ev["photo"]["image"].startswith("data:image/webp;base64,") and ev["photo"]["inliers"] == 120
    assert ev["nadir"] == [row.nadir_lat, row.nadir_lon] and ev["radius_km"] > 2000
    np.testing.assert_allclose(ev["true_footprint"], fp.corners, atol=1e-6)
    bare = webmap.evidence(Localization(Photo(mrf="x"), ()))
    assert bare["candidates"] == [] and bare["disk"] is None and bare["photo"] is None

"""Web-Mercator tile math against the corners stored in the real metadata and against pyproj's
EPSG:3857 (an independent implementation of the projection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest

from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock, fractional_tile, lonlat_from_fractional

CORNERS = ("ll_lat", "ll_lon", "ul_lat", "ul_lon", "ur_lat", "ur_lon", "lr_lat", "lr_lon")
MERC = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
HALF = 20037508.342789244  # half the EPSG:3857 world width, metres


def _stored_vs_ours(frame: pd.DataFrame, zoom, row, col) -> np.ndarray:
    ours = np.array([np.ravel(TileBlock(int(z), int(r), int(c)).corners) for z, r, c in zip(zoom, row, col)])
    return np.abs(ours - frame[list(CORNERS)].to_numpy())


def test_db_tile_corners_and_centres(shared_data):
    db = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    err = _stored_vs_ours(db, db.zoom, db.tile_row, db.tile_col)
    assert err.max() <= 5e-6 + 1e-12  # 5-decimal rounding of exact corners
    centres = np.array([TileBlock(int(z), int(r), int(c)).lonlat_box_centre
                        for z, r, c in zip(db.zoom, db.tile_row, db.tile_col)])
    assert np.abs(centres - db[["center_lat", "center_lon"]].to_numpy()).max() <= 5e-6 + 1e-12
    # the stored centre is the lat/lon box midpoint, not the Mercator centre (they differ north of the equator)
    t = TileBlock(9, 150, 98)
    assert t.centre[0] > t.lonlat_box_centre[0] + 0.005 and t.centre[1] == pytest.approx(t.lonlat_box_centre[1])


def test_earthmatch_candidates_any_zoom(shared_data):
    ec = pd.read_csv(shared_data / "earthloc_meta" / "earthmatch_candidates.csv")
    assert set(ec.zoom) >= {8, 14}
    assert _stored_vs_ours(ec, ec.zoom, ec.tile_row, ec.tile_col).max() <= 5e-6 + 1e-12


def test_context_bounds_and_surrounding(shared_data):
    cx = pd.read_csv(shared_data / "iss_mini" / "contexts.csv")
    for r in cx.itertuples():
        s = TileBlock.from_name(r.candidate_tile).surrounding(4)
        assert (s.zoom, s.row, s.col, s.size) == (r.zoom, r.tile_row0, r.tile_col0, 12)
        w, so, e, n = s.bounds
        assert max(abs(w - r.west_lon), abs(so - r.south_lat), abs(e - r.east_lon), abs(n - r.north_lat)) < 1e-7


def test_pixels_are_exact_mercator_not_linear_in_latitude():
    """A z9 block at ~59 N: pixel rows are linear in EPSG:3857 y (pyproj), not in latitude."""
    t = TileBlock(9, 150, 98)
    w, s, e, n = t.bounds
    y = np.array([0.0, 256.0, 512.0, 700.5, 1024.0])
    x = np.array([0.0, 100.0, 512.0, 900.0, 1024.0])
    lon, lat = t.pixel_to_lonlat(x, y)
    # independent: map pixel -> EPSG:3857 metres linearly, then pyproj's inverse
    (mx0, mx1), (my0, my1) = MERC.transform([w, e], [n, s])
    mx, my = mx0 + x / 1024 * (mx1 - mx0), my0 + y / 1024 * (my1 - my0)
    ref_lon, ref_lat = MERC.transform(mx, my, direction="INVERSE")
    assert np.abs(lat - ref_lat).max() < 1e-9 and np.abs(lon - ref_lon).max() < 1e-9
    linear = n + y / 1024 * (s - n)
    assert np.abs(lat - linear)[2] > 0.007  # the naive map is ~850 m (5 px) off mid-image at this latitude
    bx, by = t.lonlat_to_pixel(lon, lat)
    assert np.abs(bx - x).max() < 1e-6 and np.abs(by - y).max() < 1e-6
    # non-square / resized images (EarthMatch contexts are 1536 px for 12 tiles)
    c = t.surrounding(4)
    lon2, lat2 = c.pixel_to_lonlat(768.0, 768.0, 1536, 1536)
    assert (float(lat2), float(lon2)) == pytest.approx(c.centre, abs=1e-12)


def test_fractional_tiles_match_epsg3857():
    lon = np.array([-179.9, -33.3, 0.0, 12.5, 179.9])
    lat = np.array([-60.0, -10.0, 0.0, 45.0, 84.0])
    fx, fy = fractional_tile(lon, lat, 11)
    mx, my = MERC.transform(lon, lat)
    n = 2**11
    assert np.allclose(fx, (mx + HALF) / (2 * HALF) * n, atol=1e-8)
    assert np.allclose(fy, (HALF - my) / (2 * HALF) * n, atol=1e-8)
    blon, blat = lonlat_from_fractional(fx, fy, 11)
    assert np.allclose(blon, lon, atol=1e-9) and np.allclose(blat, lat, atol=1e-9)


def test_metres_per_pixel_against_geodesic_width():
    geod = pyproj.Geod(ellps="WGS84")
    for t in (TileBlock(9, 256, 100), TileBlock(10, 316, 500), TileBlock(11, 1100, 40)):
        lat, lon = t.centre
        lon0, _ = t.pixel_to_lonlat(511.0, 512.0)
        lon1, _ = t.pixel_to_lonlat(513.0, 512.0)
        _, _, d = geod.inv(float(lon0), lat, float(lon1), lat)
        # Web-Mercator's sphere vs the ellipsoid: within 0.7%
        assert t.metres_per_pixel() == pytest.approx(d / 2, rel=7e-3)
    assert TileBlock(9, 254, 0).metres_per_pixel() == pytest.approx(305.7, rel=2e-3)  # facts: z9 305.7 m/px


def test_tile_names_and_bad_blocks():
    t = TileBlock.from_name("14_4770_15528")
    assert (t.zoom, t.row, t.col) == (14, 4770, 15528) and t.name == "14_4770_15528"
    assert TileBlock(9, 2, 3).name == "09_0002_0003" and len(TileBlock(9, 2, 3).tiles()) == 16
    for bad in ("9_1_x", "09-0002-0003", "1_2"):
        with pytest.raises(InputError, match="ZZ_RRRR_CCCC"):
            TileBlock.from_name(bad)
    with pytest.raises(InputError, match="leaves the"):
        TileBlock(9, 510, 0)
    with pytest.raises(InputError, match="zoom"):
        TileBlock(30, 0, 0)

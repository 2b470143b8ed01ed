"""Geometry: Web-Mercator tiles, footprints, official file names, visibility from the ISS."""

"""The EarthLoc database: place grid (:mod:`.grid`), builder (:mod:`.build`), manifest (:mod:`.manifest`)."""

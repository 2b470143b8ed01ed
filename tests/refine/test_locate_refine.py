"""``earthloc locate --refine`` end to end: a 9-image DB cut from the iss_mini mosaics, an offline index,
one real photo; the GeoJSON carries a refined footprint that holds NASA's centre."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock

EXE = str(Path(sys.executable).with_name("earthloc"))
PHOTO, TRUE_TILE = "ISS050-E-70536", TileBlock(14, 6410, 9928)  # its rank-0 candidate, a hit (iss_mini)


@pytest.mark.slow
def test_locate_refine_geojson(tmp_path, iss_mini):
    from earthloc.db.build import build_db
    from earthloc.sources.mosaic import MosaicSource

    places = [TileBlock(14, TRUE_TILE.row + dr, TRUE_TILE.col + dc) for dr in (-4, 0, 4) for dc in (-4, 0, 4)]
    build_db(MosaicSource.from_iss_mini(iss_mini), places, [2018], tmp_path / "db", workers=2, progress=False)
    r = subprocess.run([EXE, "index", "build", "--db", str(tmp_path / "db"), "--model", "lite0-gem",
                        "--out", str(tmp_path / "ix")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "loc.geojson"
    r = subprocess.run([EXE, "locate", str(iss_mini / "queries" / f"{PHOTO}.jpg"), "--index", str(tmp_path / "ix"),
                        "--nadir", "35.4,39.3", "--top", "9", "--refine", "--matcher", "xfeat-lg", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    feats = json.loads(out.read_text())["features"]
    kinds = [f["properties"]["kind"] for f in feats]
    assert kinds.count("candidate") == 9 and kinds.count("refined_footprint") == 1
    ref = next(f for f in feats if f["properties"]["kind"] == "refined_footprint")
    assert ref["properties"]["inliers"] >= 100 and ref["properties"]["confidence"] > 0.9
    ring = ref["geometry"]["coordinates"][0]
    fp = Footprint(tuple((lat, lon) for lon, lat in ring[:-1]))
    assert fp.contains(36.4, 38.2)  # NASA's centre point of the photo
    # the best candidate after re-ranking overlaps the refined footprint most: the true tile or a neighbour of it
    first = next(f for f in feats if f["properties"]["kind"] == "candidate" and f["properties"]["rank"] == 1)
    assert TileBlock.from_name(first["properties"]["tile"]).zoom == 14

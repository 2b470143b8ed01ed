"""Localization with refinement on a 9-image DB cut from the iss_mini mosaics, an offline index and one real
photo: through the application layer (decoded once, final records resumable) and through ``earthloc locate
--refine``; the refined footprint holds NASA's centre."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import earthloc.pipeline
import earthloc.refine.rerank
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.photos import load_photos
from earthloc.pipeline import LocateOptions, localize, open_locator

EXE = str(Path(sys.executable).with_name("earthloc"))
PHOTO, TRUE_TILE = "ISS050-E-70536", TileBlock(14, 6410, 9928)  # its rank-0 candidate, a hit (iss_mini)
NASA_CENTRE = (36.4, 38.2)

pytestmark = pytest.mark.slow  # refines 9 candidates per run: ~1 min on 2 cores


@pytest.fixture(scope="module")
def index_dir(iss_mini, tmp_path_factory):
    from earthloc.db.build import build_db
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.sources.iss_mini import IssMini

    tmp = tmp_path_factory.mktemp("refine")
    places = [TileBlock(14, TRUE_TILE.row + dr, TRUE_TILE.col + dc) for dr in (-4, 0, 4) for dc in (-4, 0, 4)]
    build_db(IssMini.open(iss_mini).source(), places, [2018], tmp / "db", workers=2, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "ix", progress=False)
    return tmp / "ix"


def test_localize_refine_decodes_once_and_resumes_with_the_refined_record(index_dir, iss_mini, tmp_path,
                                                                          monkeypatch):
    photo = next(p for p in load_photos(iss_mini / "queries.csv", iss_mini / "queries") if p.mrf == PHOTO)
    decoded = []
    real = earthloc.pipeline.load_image
    monkeypatch.setattr(earthloc.pipeline, "load_image", lambda path: decoded.append(path) or real(path))
    monkeypatch.setattr(earthloc.refine.rerank, "load_image", lambda path: pytest.fail("photo decoded twice"))
    events: list[tuple[str, int, int]] = []
    locator = open_locator(index_dir)
    options = LocateOptions(top_k=9, refine=True, matcher="xfeat-lg")
    progress = tmp_path / "run.jsonl"
    loc = localize(locator, [photo], options, progress, on_event=lambda *e: events.append(e))[0]
    assert decoded == [photo.path]
    assert [e[0] for e in events] == ["decoding", "encoding", "searching", "refining", "done"]
    assert loc.error is None and len(loc.candidates) == 9
    assert loc.inliers >= 100 and loc.confidence > 0.9 and loc.refined_footprint.contains(*NASA_CENTRE)
    # the progress file holds the FINAL (refined) record: a rerun refines nothing and returns it as is
    monkeypatch.setattr(earthloc.refine.rerank.DbRefiner, "refine", lambda *a, **k: pytest.fail("refined again"))
    again = localize(locator, [photo], options, progress)[0]
    assert again == loc and len(progress.read_text().splitlines()) == 1
    # a run without refinement reuses it too; one that asks for refinement of an unrefined record redoes it
    plain = tmp_path / "plain.jsonl"
    monkeypatch.undo()
    first = localize(locator, [photo], LocateOptions(top_k=9), plain)[0]
    assert first.inliers is None and first.refined_footprint is None
    redo = localize(locator, [photo], options, plain)[0]
    assert redo.inliers >= 100 and len(plain.read_text().splitlines()) == 2


def test_cli_locate_refine_geojson(index_dir, iss_mini, tmp_path):
    out = tmp_path / "loc.geojson"
    r = subprocess.run([EXE, "locate", str(iss_mini / "queries" / f"{PHOTO}.jpg"), "--index", str(index_dir),
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
    assert fp.contains(*NASA_CENTRE)
    # the best candidate after re-ranking overlaps the refined footprint most: the true tile or a neighbour of it
    first = next(f for f in feats if f["properties"]["kind"] == "candidate" and f["properties"]["rank"] == 1)
    assert TileBlock.from_name(first["properties"]["tile"]).zoom == 14

"""Locate on real data: a DB cut from three iss_mini contexts (Turkey/Syria z14, Iraq z10, California
z13), indexed with lite0-gem; real ISS photos with their NASA nadirs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from earthloc import outputs
from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.index.store import Index
from earthloc.locate import Locator
from earthloc.pipeline import LocateOptions, localize
from earthloc.records import Photo

CONTEXTS = ("14_6410_9928", "10_0406_0630", "13_3158_1310")
EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.models.registry import load_model
    from earthloc.photos import load_photos
    from earthloc.sources.iss_mini import IssMini

    root = shared_data / "iss_mini"
    tmp = tmp_path_factory.mktemp("locate")
    source = IssMini.open(root).source()
    mosaics = [m for m in source.mosaics if m.path.stem in CONTEXTS]
    assert len(mosaics) == 3
    build_db(source, demo_places(source, mosaics), [2018], tmp / "db", workers=2, progress=False)
    model = load_model("lite0-gem")
    index = Index.build(tmp / "db", model, tmp / "index", progress=False)
    photos = {p.mrf: p for p in load_photos(root / "queries.csv", root / "queries")}
    return tmp, index, model, photos


def brute_force_rows(index: Index, q: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    """FAISS exhaustive inner product over every vector, then the mask, then one entry per DB image."""
    flat = faiss.IndexFlatIP(index.dim)
    flat.add(index.vectors(0, index.faiss.ntotal))
    scores, ids = flat.search(q, flat.ntotal)
    best: dict[int, float] = {}
    for srow, irow in zip(scores, ids):
        for s, i in zip(srow, irow):
            if mask[i] and s > best.get(int(i), -9):
                best[int(i)] = float(s)
    return [r for r, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def test_disk_search_equals_brute_force_on_real_descriptors(setup):
    _, index, model, photos = setup
    loc = Locator(index, model)
    for mrf in ("ISS050-E-70536", "ISS055-E-27330", "ISS052-E-43456"):
        photo = loc.resolve(photos[mrf])
        mask = loc.visible_mask(photo)
        assert 0 < mask.sum() < len(index)  # the disk keeps some DB images and drops others
        q = loc.encode([photo.path])  # (1, 4, D)
        got = index.search(q, 15, mask=mask, query_rotations=loc.query_rotations)[0]
        assert [h.row for h in got] == brute_force_rows(index, q[0], mask, 15)


def test_locate_real_photo_returns_ranked_candidates_in_its_disk(setup):
    _, index, model, photos = setup
    loc = Locator(index, model)
    photo = photos["ISS050-E-70536"]  # Turkey/Syria: California must never come back
    res = localize(loc, [photo], LocateOptions(top_k=10))[0]
    assert res.error is None and len(res.candidates) == 10
    in_disk = set(index.manifest.tile[loc.visible_mask(loc.resolve(photo))])
    assert {c.tile.name for c in res.candidates} <= in_disk
    assert not any(c.tile.name.startswith("13_") for c in res.candidates)  # the California context
    assert len({c.tile.name for c in res.candidates}) == 10  # rotations merged
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores, reverse=True)
    for c in res.candidates:
        assert c.footprint == Footprint(c.tile.corners)
        assert c.rotation_deg in (0, 90, 180, 270) and Path(c.path).is_file()


def test_rotated_db_image_is_found_with_its_rotation(setup, tmp_path):
    _, index, model, _ = setup
    row = index.manifest.iloc[7]
    img = Image.open(index.db_dir / row.path).convert("RGB").rotate(90)  # PIL: counter-clockwise
    img.save(tmp_path / "rot.png")
    photo = Photo(mrf="rot", path=tmp_path / "rot.png", nadir=(row.centre_lat, row.centre_lon))
    best = localize(Locator(index, model), [photo], LocateOptions(top_k=3))[0].candidates[0]
    # the DB image must be rotated 90 deg counter-clockwise to look like the photo
    assert (best.tile.name, best.rotation_deg) == (row.tile, 90)
    assert best.score > 0.98


def test_official_4x_rotated_index_on_real_descriptors(setup, tmp_path):
    """--rotations db (the official layout: every DB image stored at 0/90/180/270, the photo encoded once) on
    real descriptors: exact against FAISS brute force over all 4N vectors, and a DB image rotated by 90
    degrees comes back with rotation 90, as with the default 1x index."""
    tmp, index, model, photos = setup
    ix4 = Index.build(tmp / "db", model, tmp_path / "ix4", rotations="db", progress=False)
    assert ix4.faiss.ntotal == 4 * len(ix4) and ix4.rotations == "db"
    loc = Locator(ix4, model)
    assert loc.query_rotations == (0,)
    flat = faiss.IndexFlatIP(ix4.dim)
    flat.add(ix4.vectors(0, ix4.faiss.ntotal))
    for mrf in ("ISS050-E-70536", "ISS052-E-43456"):
        photo = loc.resolve(photos[mrf])
        mask = loc.visible_mask(photo)
        q = loc.encode([photo.path])  # (1, 1, D)
        got = ix4.search(q, 15, mask=mask, query_rotations=(0,))[0]
        scores, ids = flat.search(q[0], flat.ntotal)
        best: dict[int, tuple[float, int]] = {}
        for sc, vid in zip(scores[0], ids[0]):
            row, slot = divmod(int(vid), 4)
            if mask[row] and (row not in best or sc > best[row][0]):
                best[row] = (float(sc), 90 * slot)
        want = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:15]
        assert [(h.row, h.rotation_deg) for h in got] == [(r, rot) for r, (_, rot) in want]
    row = ix4.manifest.iloc[7]
    img = Image.open(ix4.db_dir / row.path).convert("RGB").rotate(90)  # PIL: counter-clockwise
    img.save(tmp_path / "rot.png")
    top = localize(loc, [Photo(mrf="rot", path=tmp_path / "rot.png", nadir=(row.centre_lat, row.centre_lon))],
                   LocateOptions(top_k=3))[0]
    assert (top.candidates[0].tile.name, top.candidates[0].rotation_deg) == (row.tile, 90)


def test_batch_error_rows_and_resume(setup, tmp_path):
    _, index, model, photos = setup
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    good = photos["ISS050-E-70536"]
    batch = [
        good,
        replace(photos["ISS052-E-43456"], nadir=None, time=None),  # no nadir, no time
        Photo(mrf="broken", path=tmp_path / "broken.jpg", nadir=(35.0, 39.0)),
        replace(photos["ISS055-E-27330"], nadir=None),  # date only, if any; else no time at all
    ]
    prog = tmp_path / "progress.jsonl"
    first = localize(Locator(index, model), batch, LocateOptions(top_k=5), prog)
    assert [r.error is None for r in first] == [True, False, False, False]
    assert "nadir" in first[1].error and "broken.jpg" in first[2].error
    assert len(prog.read_text().splitlines()) == 4
    again = localize(Locator(index, model), batch, LocateOptions(top_k=5), prog)
    assert again[0] == first[0]  # read back from the progress file, not recomputed
    assert len(prog.read_text().splitlines()) == 4 + 3  # only the failed photos were retried
    assert outputs.read_jsonl(prog)[0] == first[0]


def test_other_model_is_refused(setup):
    from earthloc.models.registry import load_model

    _, index, _, _ = setup
    with pytest.raises(InputError, match="built with model 'lite0-gem'"):
        Locator(index, load_model("lite0-mixvpr", pretrained=False))


def test_cli_single_photo_batch_and_bad_input(setup, shared_data, tmp_path):
    tmp, index, _, _ = setup
    photo = shared_data / "iss_mini" / "queries" / "ISS050-E-70536.jpg"
    r = subprocess.run([EARTHLOC, "locate", str(photo), "--index", str(tmp / "index"), "--nadir", "35.4,39.3",
                        "--top", "3", "--format", "geojson", "--no-verify"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fc = json.loads(r.stdout)
    assert [f["properties"]["rank"] for f in fc["features"] if f["properties"]["kind"] == "candidate"] == [1, 2, 3]

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "ISS050-E-70536.jpg").write_bytes(photo.read_bytes())
    (folder / "ISS000-E-1.jpg").write_text("not a jpeg")
    out = tmp_path / "res.csv"
    r = subprocess.run([EARTHLOC, "locate", str(folder), "--index", str(tmp / "index"), "--metadata",
                        str(shared_data / "iss_mini" / "queries.csv"), "--out", str(out), "--map",
                        str(tmp_path / "map.html"), "--no-verify"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # one photo failed, the other went on
    text = out.read_text()
    assert "ISS050-E-70536" in text and "ISS000-E-1" in text and (tmp_path / "map.html").is_file()

    r = subprocess.run([EARTHLOC, "locate", str(photo), "--index", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_disk_mask_equals_in_visible_disk_over_every_row(shared_data):
    """The latitude-band shortcut of disk_mask must not change the disk (8,475 real DB tile centres)."""
    import pandas as pd

    from earthloc.geo.visibility import in_visible_disk
    from earthloc.index.identity import ModelIdentity
    from earthloc.locate import disk_mask

    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    manifest = pd.DataFrame({"tile": [f"{z:02d}_{r:04d}_{c:04d}" for z, r, c in zip(df.zoom, df.tile_row, df.tile_col)],
                             "year": df.year, "path": df.original_name, "sha256": "x",
                             "centre_lat": df.center_lat, "centre_lon": df.center_lon})
    vecs = np.ones((len(df), 1, 8), np.float32) / np.sqrt(8)
    index = Index.from_vectors(vecs, manifest, ModelIdentity("t", None, 8, 8, "p"), "query")
    sizes = []
    for nadir, alt, off in [((35.0, 135.0), None, None), ((-40.0, -178.0), 420.0, None), ((51.6, -179.5), 400.0, 40.0),
                            ((0.0, 20.0), 415.0, 60.0), ((-30.0, 140.0), 300.0, None), ((58.0, 100.0), None, None)]:
        want = in_visible_disk(nadir, alt, index.centre_lat, index.centre_lon, off)
        got = disk_mask(index, nadir, alt, off)
        assert np.array_equal(got, want)
        sizes.append(int(want.sum()))
    assert sizes[1] > 0 and sum(s > 0 for s in sizes) >= 5  # incl. a disk across the antimeridian
    rng = np.random.default_rng(0)
    for lat, lon, alt in zip(rng.uniform(-52, 52, 200), rng.uniform(-180, 180, 200), rng.uniform(330, 440, 200)):
        assert np.array_equal(disk_mask(index, (lat, lon), alt),
                              in_visible_disk((lat, lon), alt, index.centre_lat, index.centre_lon))


def test_nadir_from_time_and_day_only_dates(setup):
    from datetime import datetime

    from earthloc.geo.visibility import iss_state

    _, index, model, photos = setup
    loc = Locator(index, model)
    when = datetime(2017, 3, 1, 12, 30, tzinfo=UTC)
    photo = replace(photos["ISS050-E-70536"], nadir=None, time=when, extra={"time_precision": "exact"})
    got = loc.resolve(photo)
    st = iss_state(when)
    assert got.nadir == (st.lat, st.lon) and got.altitude_km == pytest.approx(st.altitude_km)
    assert 330 < got.altitude_km < 450
    with pytest.raises(InputError, match="only the date"):
        loc.resolve(replace(photo, extra={"time_precision": "day"}))


def test_cli_index_build_fp16_info_and_bad_options(setup, tmp_path):
    tmp, index, _, _ = setup
    r = subprocess.run([EARTHLOC, "index", "build", "--db", str(tmp / "db"), "--out", str(tmp_path / "ix16"),
                        "--precision", "fp16"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ix16 = Index.open(tmp_path / "ix16", db_dir=tmp / "db")
    assert ix16.precision == "fp16" and ix16.manifest.tile.tolist() == index.manifest.tile.tolist()
    assert ix16.faiss.code_size == 2 * index.dim
    info = json.loads(subprocess.run([EARTHLOC, "index", "info", str(tmp_path / "ix16")], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert info["precision"] == "fp16" and info["model"]["name"] == "lite0-gem" and info["vectors"] == len(index)
    r = subprocess.run([EARTHLOC, "index", "build", "--db", str(tmp / "db"), "--out", str(tmp_path / "x"),
                        "--precision", "int4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--precision" in r.stderr

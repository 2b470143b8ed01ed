"""DB build from local mosaics: pixel placement, official layout, manifest, resume."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from earthloc.db import manifest
from earthloc.db.build import build_db, encode_jpeg
from earthloc.db.grid import places_covered
from earthloc.geo.names import parse_db_name
from earthloc.geo.tiles import TileBlock


def _context(shared_data, name):
    row = pd.read_csv(shared_data / "iss_mini" / "contexts.csv").set_index("candidate_tile").loc[name]
    img = np.asarray(Image.open(shared_data / "iss_mini" / row.file).convert("RGB"))
    return row, img


def test_db_image_is_the_context_crop_scaled_2x(mini, shared_data, tmp_path):
    # 1536-px context: 128 px per WMTS tile, so a 4x4 block is a 512-px crop replicated to 1024 px.
    row, ctx = _context(shared_data, "10_0392_0638")
    block = TileBlock(10, int(row.tile_row0) + 4, int(row.tile_col0) + 2)
    build_db(mini, [block], [2018], tmp_path, workers=1, progress=False)
    df = manifest.load(tmp_path)
    assert len(df) == 1
    y0, x0 = (block.row - row.tile_row0) * 128, (block.col - row.tile_col0) * 128
    crop = ctx[y0 : y0 + 512, x0 : x0 + 512]
    expected = crop.repeat(2, axis=0).repeat(2, axis=1)
    data = (tmp_path / df.path[0]).read_bytes()
    assert data == encode_jpeg(Image.fromarray(expected))  # byte-exact: same pixels, same encoder
    got = np.asarray(Image.open(tmp_path / df.path[0])).astype(int)
    assert got.shape == (1024, 1024, 3)
    assert np.abs(got - expected).mean() < 3  # decoded JPEG ~ crop
    # a one-tile shift would be far off: placement really is by tile index
    shifted = ctx[y0 : y0 + 512, x0 + 128 : x0 + 640].repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(got - shifted).mean() > 5 * np.abs(got - expected).mean()


def test_official_layout_and_manifest(mini, tmp_path):
    blocks = places_covered(mini, zooms=[13])[:2]
    rep = build_db(mini, blocks, [2018], tmp_path, workers=2, progress=False)
    assert (rep.images, rep.written, rep.skipped) == (2, 2, 0)
    df = manifest.load(tmp_path)
    assert list(df.columns) == list(manifest.COLUMNS)
    for r in df.itertuples():
        p = tmp_path / r.path
        name = parse_db_name(p.name)
        assert name.tile.name == r.tile and name.year == r.year == 2018
        assert p.parent.parent.name == "2018_13" and p.parent.parent.parent.name == "database"
        lat10, lon10 = (int(v) for v in p.parent.name.split("_"))
        assert abs(lat10 - r.centre_lat) <= 5 and abs(lon10 - r.centre_lon) <= 5
        assert hashlib.sha256(p.read_bytes()).hexdigest() == r.sha256
        w, s, e, n = TileBlock.from_name(r.tile).bounds
        assert (r.ll_lat, r.ll_lon, r.ur_lat, r.ur_lon) == pytest.approx((s, w, n, e), abs=1e-5)
    # the same folder without its manifest is read from the file names alone
    (tmp_path / manifest.MANIFEST).unlink()
    scanned = manifest.load(tmp_path)
    assert scanned.drop(columns="sha256").equals(df.drop(columns="sha256"))
    assert scanned.sha256.isna().all()


def test_manifest_of_an_official_folder_matches_official_metadata(shared_data, tmp_path):
    meta = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv").sample(20, random_state=0)
    jpeg = next((shared_data / "iss_mini" / "contexts").glob("*.jpg"))
    for rel in meta.original_name:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(jpeg, tmp_path / rel)
    df = manifest.load(tmp_path).set_index("path")
    assert len(df) == 20
    for m in meta.itertuples():
        r = df.loc[m.original_name]
        assert (r.zoom, r.row, r.col, r.year) == (m.zoom, m.tile_row, m.tile_col, 2021)
        assert (r.centre_lat, r.centre_lon, r.area_km2) == pytest.approx((m.center_lat, m.center_lon, m.area_km2))


def test_rerun_resumes_and_rewrites_only_missing_images(mini, tmp_path):
    blocks = places_covered(mini, zooms=[12])[:6]
    first = build_db(mini, blocks, [2018], tmp_path, workers=2, progress=False)
    assert first.written == 6
    df = manifest.load(tmp_path)
    stamps = {p: (tmp_path / p).stat().st_mtime_ns for p in df.path}
    (tmp_path / df.path[2]).unlink()
    again = build_db(mini, blocks, [2018], tmp_path, workers=2, progress=False)
    assert (again.written, again.skipped) == (1, 5)
    df2 = manifest.load(tmp_path)
    assert df2.equals(df)  # same bytes, same checksums
    for p in df.path.drop(2):
        assert (tmp_path / p).stat().st_mtime_ns == stamps[p]
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / manifest.JOURNAL).exists()


def test_smaller_images_keep_the_footprint_and_one_size_per_folder(mini, shared_data, tmp_path):
    """--size 256: the same 512-px context crop, scaled down to 256 px; resuming with another size refuses."""
    from earthloc.db.integrity import verify_db
    from earthloc.errors import InputError

    row, ctx = _context(shared_data, "10_0392_0638")
    block = TileBlock(10, int(row.tile_row0) + 4, int(row.tile_col0) + 2)
    build_db(mini, [block], [2018], tmp_path, workers=1, progress=False, size=256)
    df = manifest.load(tmp_path)
    got = np.asarray(Image.open(tmp_path / df.path[0]).convert("RGB")).astype(float)
    assert got.shape == (256, 256, 3)
    y0, x0 = (block.row - row.tile_row0) * 128, (block.col - row.tile_col0) * 128
    crop = ctx[y0 : y0 + 512, x0 : x0 + 512].astype(float)
    box_mean = crop.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))  # the same ground, 2x2 pixels averaged
    shifted = ctx[y0 : y0 + 512, x0 + 128 : x0 + 640].astype(float).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    err = np.abs(got - box_mean).mean()
    assert err < 6 and np.abs(got - shifted).mean() > 3 * err
    assert verify_db(tmp_path, progress=False).ok
    with pytest.raises(InputError, match="holds 256-px DB images, size is 1024"):
        build_db(mini, [block], [2018], tmp_path, workers=1, progress=False)

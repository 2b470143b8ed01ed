"""The DB local-feature store on a real 5-image DB (z14 places cut from the iss_mini mosaics) and its
lite0-gem index: an interrupted build resumes after its last finished chunk, the files hold the
documented bytes per image, and a store made for other settings is not used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import earthloc.refine.features
from earthloc.db.manifest import load as load_manifest
from earthloc.geo.tiles import TileBlock
from earthloc.refine.features import STORE, FeatureStore, XFeatExtractor, build_store, bytes_per_image, read_db_image

PLACES = [TileBlock(14, 6410 + dr, 9928 + dc) for dr, dc in ((0, 0), (0, 4), (0, -4), (-4, 0), (4, 0))]


@pytest.fixture(scope="module")
def built(iss_mini, tmp_path_factory):
    """``(index folder, DB folder)`` of the 5 places; the index folder is copied before a store is built in it."""
    from earthloc.db.build import build_db
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.sources.iss_mini import IssMini

    tmp = tmp_path_factory.mktemp("features")
    build_db(IssMini.open(iss_mini).source(), PLACES, [2018], tmp / "db", workers=1, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "ix", progress=False)
    return tmp / "ix", tmp / "db"


@pytest.fixture(scope="module")
def extractor():
    return XFeatExtractor()


@pytest.fixture
def index_dir(built, tmp_path):
    shutil.copytree(built[0], tmp_path / "ix")
    return tmp_path / "ix"


class Interrupt(Exception):
    pass


def test_an_interrupted_build_resumes_after_its_last_finished_chunk(index_dir, built, extractor, monkeypatch):
    db_dir = built[1]
    monkeypatch.setattr(earthloc.refine.features, "CHUNK", 2)
    seen: list[int] = []

    def stop_at_fourth(img):
        seen.append(1)
        if len(seen) == 4:
            raise Interrupt  # killed while extracting row 3 (the second chunk: rows 2-3)
        return extractor(img)

    with pytest.raises(Interrupt):
        build_store(index_dir, db_dir, stop_at_fourth, progress=False)
    assert FeatureStore.open(index_dir, db_dir) is None  # nothing final yet
    assert json.loads((index_dir / f"{STORE}.partial" / "done.json").read_text()) == {"rows": 2}

    calls: list[int] = []
    build_store(index_dir, db_dir, lambda img: calls.append(1) or extractor(img), progress=False)
    assert len(calls) == 3  # rows 2, 3, 4: the first chunk is not extracted again
    assert not (index_dir / f"{STORE}.partial").exists()
    store = FeatureStore.open(index_dir, db_dir)
    paths = [str(db_dir / r.path) for r in load_manifest(db_dir).itertuples()]
    assert len(paths) == len(PLACES)
    for path in paths:  # every row, from either run, holds that image's own features
        got, fresh = store.get(path), extractor(read_db_image(path))
        assert np.allclose(got.keypoints, fresh.keypoints[:len(got.keypoints)], atol=0.05)
        cos = (got.descriptors.astype(np.float32) * fresh.descriptors[:len(got.keypoints)].astype(np.float32)).sum(1)
        assert cos.min() > 0.99  # int8 storage
    assert store.get(str(db_dir / "not-in-the-index.jpg")) is None


def test_store_holds_the_documented_bytes_per_image(index_dir, built, extractor):
    build_store(index_dir, built[1], extractor, progress=False)
    per_image = 1024 * (2 * 2 + 64) + 4  # 1024 keypoints: float16 x, y + 64 int8; an int32 count
    assert bytes_per_image() == per_image
    meta = json.loads((index_dir / STORE / "meta.json").read_text())
    assert meta["rows"] == len(PLACES) and meta["bytes_per_image"] == per_image
    size = sum(f.stat().st_size for f in (index_dir / STORE).glob("*.npy"))
    assert len(PLACES) * per_image <= size <= len(PLACES) * per_image + 3 * 256  # + 3 small .npy headers


@pytest.mark.parametrize("change", [{"px": 1024}, {"keypoints": 2048}, {"extractor": "disk"}])
def test_a_store_made_for_other_settings_is_not_used(index_dir, built, extractor, change):
    assert FeatureStore.open(index_dir, built[1]) is None  # built without one
    build_store(index_dir, built[1], extractor, progress=False)
    assert FeatureStore.open(index_dir, built[1]) is not None
    meta_file = index_dir / STORE / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), **change}))
    assert FeatureStore.open(index_dir, built[1]) is None

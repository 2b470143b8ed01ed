"""Resumable DB encoding (index.chunks) on a real DB of 5 places cut from an iss_mini context and the
offline lite0-gem model: chunks are written as they come, reused by a rerun, and equal one encoding."""

from __future__ import annotations

import numpy as np
import pytest

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.geo.tiles import TileBlock
from earthloc.index.chunks import encode_db, partial_dir, remove_chunks
from earthloc.index.formats import RotationMode
from earthloc.index.identity import ModelIdentity
from earthloc.models.encoders import LocalEncoder
from earthloc.models.registry import load_model
from earthloc.sources.iss_mini import IssMini


class CountingEncoder(LocalEncoder):
    """A LocalEncoder that counts the images it was asked to encode."""

    calls: int = 0

    def encode(self, items, rotations, progress=False):
        self.calls += len(list(items))
        return super().encode(items, rotations, progress)


@pytest.fixture(scope="module")
def db(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("db")
    places = [TileBlock(12, 1164, 2526 + dc) for dc in (-4, -2, 0, 2, 4)]  # inside context 12_1164_2526
    build_db(IssMini.open(shared_data).source(), places, [2018], out, workers=2, progress=False)
    return out, manifest.load(out)


def test_chunks_resume_and_equal_one_pass(db, tmp_path):
    db_dir, man = db
    model = load_model("lite0-gem")
    enc = CountingEncoder(model, batch_size=4)
    vecs = encode_db(db_dir, man, enc, tmp_path, RotationMode.QUERY, chunk=2, progress=False)
    assert vecs.shape == (5, 1, 1280) and vecs.dtype == np.float32 and enc.calls == 5
    part = partial_dir(tmp_path, man, RotationMode.QUERY, ModelIdentity.of(model))
    files = sorted(p.name for p in part.iterdir())
    assert files == ["chunk_00000.npy", "chunk_00001.npy", "chunk_00002.npy"]  # 2 + 2 + 1 images

    (part / "chunk_00001.npy").unlink()  # as if killed before the second chunk was written
    again = CountingEncoder(model, batch_size=4)
    resumed = encode_db(db_dir, man, again, tmp_path, RotationMode.QUERY, chunk=2, progress=False)
    assert again.calls == 2  # only the missing chunk
    np.testing.assert_allclose(resumed, vecs, atol=1e-6)

    whole = LocalEncoder(model, batch_size=8).encode([db_dir / p for p in man["path"]], (0,))
    np.testing.assert_allclose(vecs, whole, atol=1e-5)  # chunking does not change a descriptor

    remove_chunks(tmp_path, man, RotationMode.QUERY, ModelIdentity.of(model))
    assert not part.exists()


def test_db_rotations_are_four_per_image(db, tmp_path):
    db_dir, man = db
    vecs = encode_db(db_dir, man.head(2), LocalEncoder(load_model("lite0-gem")), tmp_path, RotationMode.DB,
                     chunk=8, progress=False)
    assert vecs.shape == (2, 4, 1280)
    norms = np.linalg.norm(vecs, axis=2)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert not np.allclose(vecs[:, 0], vecs[:, 1])  # a rotated image gives another descriptor

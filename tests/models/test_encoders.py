"""Ray scale-out with a local Ray: the index build equals the serial one, chunks on disk are reused, a bad
image fails with the same one-line error; batch localization on Ray equals the serial one, errors included.
Real Sentinel-2 DB images of one iss_mini context and the real ISS photo taken there."""

from __future__ import annotations

import numpy as np
import pytest

from earthloc.errors import InputError
from earthloc.index.identity import ModelIdentity, manifest_digest
from earthloc.index.store import Index
from earthloc.models.encoders import LocalEncoder, RayEncoder

pytestmark = pytest.mark.slow  # starts Ray: ~10-20 s on 2 cores
CONTEXT, MRF = "14_6410_9928", "ISS050-E-70536"  # Turkey/Syria, z14, and the photo taken there


@pytest.fixture(scope="module", autouse=True)
def ray_here():
    """One local Ray for the module: calls with ray="local" join it instead of starting their own."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def db(shared_data, tmp_path_factory):
    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.sources.iss_mini import IssMini

    source = IssMini.open(shared_data / "iss_mini").source()
    mosaic = next(m for m in source.mosaics if m.path.stem == CONTEXT)
    out = tmp_path_factory.mktemp("raydb") / "db"
    build_db(source, demo_places(source, [mosaic]), [2018], out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def model():
    from earthloc.models.registry import load_model

    return load_model("lite0-gem")


def test_ray_build_equals_serial_and_reuses_finished_chunks(db, model, tmp_path, monkeypatch):
    import earthloc.models.encode
    from earthloc.db.manifest import load

    serial = Index.build(db, model, tmp_path / "serial", chunk=8, progress=False)
    assert len(serial) > 16  # several chunks of 8

    # a finished chunk from an earlier (killed) run: Ray must take it as is, not encode it again
    manifest = load(db)
    partial = tmp_path / "ray" / f".partial-{manifest_digest(manifest)[:16]}-query-{ModelIdentity.of(model).name}"
    partial.mkdir(parents=True)
    planted = np.zeros((8, 1, serial.dim), np.float32)
    planted[:, 0, 0] = 1.0
    np.save(partial / "chunk_00001.npy", planted)

    def not_here(*args, **kwargs):
        raise AssertionError("encoded in the driver: with --ray only Ray worker processes encode")

    monkeypatch.setattr(earthloc.models.encode, "encode", not_here)  # worker processes import their own copy
    ray_ix = Index.build(db, RayEncoder(model, "local", batch_size=32), tmp_path / "ray", chunk=8, progress=False)
    assert ray_ix.manifest["tile"].tolist() == serial.manifest["tile"].tolist()
    a, b = serial.vectors(0, len(serial)), ray_ix.vectors(0, len(ray_ix))
    # rows of the planted chunk (manifest rows 8-15 before geo ordering) carry the planted vector
    planted_tiles = set(manifest["tile"].iloc[8:16])
    is_planted = ray_ix.manifest["tile"].isin(planted_tiles).to_numpy()
    assert is_planted.sum() == 8 and (b[is_planted, 0] == 1.0).all() and (b[is_planted, 1:] == 0).all()
    cos = (a[~is_planted] * b[~is_planted]).sum(axis=1)
    assert cos.min() > 0.9999  # every other chunk encoded by Ray workers = the serial descriptors
    assert not partial.exists()  # finished: the partial chunks are gone


def test_ray_build_bad_image_is_one_clear_error(db, model, tmp_path):
    import shutil

    from earthloc.db.manifest import load

    bad_db = tmp_path / "db"
    shutil.copytree(db, bad_db)
    victim = bad_db / load(bad_db)["path"].iloc[3]
    victim.write_bytes(victim.read_bytes()[:500])  # truncated JPEG
    with pytest.raises(InputError, match=victim.name):
        Index.build(bad_db, RayEncoder(model, "local"), tmp_path / "ix", chunk=8, progress=False)


def test_locate_on_ray_equals_serial_with_errors_in_place(db, model, shared_data, tmp_path, monkeypatch):
    from dataclasses import replace

    import earthloc.models.encode
    from earthloc.locate import Locator
    from earthloc.photos import load_photos
    from earthloc.pipeline import LocateOptions, localize

    root = shared_data / "iss_mini"
    photo = {p.mrf: p for p in load_photos(root / "queries.csv", root / "queries")}[MRF]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.path.read_bytes()[:300])
    copies = {}
    for name in ("no-nadir", "again"):  # own files: batch runs key photos by path
        copies[name] = tmp_path / f"{name}.jpg"
        copies[name].write_bytes(photo.path.read_bytes())
    photos = [photo, replace(photo, mrf="no-nadir", path=copies["no-nadir"], nadir=None, time=None),
              replace(photo, mrf="broken", path=broken), replace(photo, mrf="again", path=copies["again"])]
    index = Index.build(db, model, tmp_path / "ix", progress=False)
    serial = localize(Locator(index, LocalEncoder(model, batch_size=2)), photos)
    monkeypatch.setattr(earthloc.models.encode, "encode", lambda *a, **k: pytest.fail("encoded in the driver"))
    on_ray = localize(Locator(index, RayEncoder(model, "local", batch_size=2)), photos, LocateOptions(), tmp_path / "p.jsonl")
    assert [bool(r.error) for r in on_ray] == [False, True, True, False]
    assert [r.error for r in on_ray] == [r.error for r in serial]
    assert "broken.jpg" in on_ray[2].error
    for a, b in zip(serial, on_ray):
        assert [c.tile.name for c in a.candidates] == [c.tile.name for c in b.candidates]
        assert [c.rotation_deg for c in a.candidates] == [c.rotation_deg for c in b.candidates]
        assert all(abs(x.score - y.score) < 1e-4 for x, y in zip(a.candidates, b.candidates))
    assert len(on_ray[0].candidates) == 10

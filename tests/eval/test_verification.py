"""The verification run on a real 5-place DB (z14 places cut from the iss_mini mosaics around
ISS050-E-70536's true tile) and the real photos: a rerun skips the photos already in the run file,
and a new photo's record says where NASA's centre stands."""

from __future__ import annotations

import json

import pytest

from earthloc.eval.verification import verify_run
from earthloc.geo.tiles import TileBlock
from earthloc.refine.verify import Verifier

PHOTO = "ISS050-E-70536"
PLACES = [TileBlock(14, 6410 + dr, 9928 + dc) for dr, dc in ((0, 0), (0, 4), (0, -4), (-4, 0), (4, 0))]


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    """``(locator, verifier, photos)``: the index of the 5 places, an xfeat-mnn verifier, the iss_mini photos."""
    from earthloc.db.build import build_db
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.pipeline import open_locator
    from earthloc.refine.calibration import load_verify_calibration
    from earthloc.refine.context import DbContexts
    from earthloc.refine.matchers import load_matcher
    from earthloc.refine.verify import DbFeatures, XFeatExtractor
    from earthloc.sources.iss_mini import IssMini

    iss = IssMini.open(shared_data / "iss_mini")
    tmp = tmp_path_factory.mktemp("verification")
    build_db(iss.source(), PLACES, [2018], tmp / "db", workers=1, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "ix", progress=False)
    verifier = Verifier(DbFeatures(XFeatExtractor()), DbContexts(tmp / "db", px=1536), load_matcher("xfeat-mnn"),
                        load_verify_calibration(), top_k=5)
    return open_locator(tmp / "ix"), verifier, iss.photos()


def test_a_rerun_skips_the_photos_already_in_the_run_file(setup, tmp_path, monkeypatch):
    locator, verifier, photos = setup
    done = next(p for p in photos if p.centre is not None and p.mrf != PHOTO)
    photo = next(p for p in photos if p.mrf == PHOTO)
    out = tmp_path / "run.jsonl"
    earlier = {"mrf": done.mrf, "footprint_holds_centre": False, "inliers": 7, "runner_up": 3}  # from a stopped run
    out.write_text(json.dumps(earlier) + "\n")
    verified: list[int] = []
    real_verify = Verifier.verify
    monkeypatch.setattr(Verifier, "verify", lambda self, *a, **k: verified.append(1) or real_verify(self, *a, **k))

    recs = verify_run(locator, verifier, [done, photo], out)
    assert len(verified) == 1  # only the new photo
    assert recs[0] == earlier and recs[1]["mrf"] == PHOTO
    new = recs[1]
    # NASA's centre lies 50 m from the border of two DB images: the answer is either of them
    assert new["retrieval_first_hit"] is not None and new["verified_first_hit"] in (1, 2)
    assert new["footprint_holds_centre"] is True and new["centre_km"] < 5 and new["inliers"] > 50
    assert [json.loads(line) for line in out.read_text().splitlines()] == recs

    again = verify_run(locator, verifier, [done, photo], out)  # everything done: nothing is verified again
    assert again == recs and len(verified) == 1 and len(out.read_text().splitlines()) == 2

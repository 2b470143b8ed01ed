"""``verify_db`` on a real DB folder (4 places cut from the iss_mini Sentinel-2 contexts): a clean build
passes; a truncated image, a changed image, a stray JPEG and a deleted one are each reported by path."""

from __future__ import annotations

import shutil

from earthloc.db import manifest
from earthloc.db.build import build_db
from earthloc.db.integrity import verify_db
from earthloc.geo.tiles import TileBlock

PLACES = [TileBlock(12, 1164 + dr, 2526 + dc) for dr in (0, 2) for dc in (0, 2)]  # inside context 12_1164_2526


def test_clean_then_each_damage_is_reported(mini, tmp_path):
    build_db(mini, PLACES, [2018], tmp_path, workers=2, progress=False)
    report = verify_db(tmp_path, workers=2, progress=False)
    assert report.ok and report.checked == 4 and report.checksums

    paths = sorted(manifest.load(tmp_path).path)
    truncated, changed, deleted = paths[0], paths[1], paths[2]
    data = (tmp_path / truncated).read_bytes()
    (tmp_path / truncated).write_bytes(data[: len(data) // 2])
    shutil.copyfile(tmp_path / paths[3], tmp_path / changed)  # a valid JPEG, other bytes
    (tmp_path / deleted).unlink()
    stray = (tmp_path / truncated).with_name("stray.jpg")
    shutil.copyfile(tmp_path / paths[3], stray)

    problems = dict(verify_db(tmp_path, workers=2, progress=False).problems)
    assert problems[truncated] == "checksum differs from the manifest"
    assert problems[changed] == "checksum differs from the manifest"
    assert problems[deleted].startswith("missing or unreadable")
    assert problems[stray.relative_to(tmp_path).as_posix()] == "JPEG not listed in the manifest"
    assert paths[3] not in problems and len(problems) == 4


def test_without_a_manifest_names_are_checked_and_a_truncated_image_does_not_decode(mini, tmp_path):
    build_db(mini, PLACES[:1], [2018], tmp_path, workers=1, progress=False)
    (tmp_path / manifest.MANIFEST).unlink()
    (path,) = manifest.load(tmp_path).path  # scanned from the file names
    data = (tmp_path / path).read_bytes()
    (tmp_path / path).write_bytes(data[: len(data) // 2])
    report = verify_db(tmp_path, workers=1, progress=False)
    assert not report.checksums
    ((where, problem),) = report.problems
    assert where == path and problem.startswith("does not decode")

"""The ISS TLE history comes with earthloc: `locate --time` works for an installed earthloc run from
any folder with no shared data; EARTHLOC_TLE points at a newer file (plain or compressed)."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from earthloc.errors import InputError
from earthloc.geo import visibility

EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


def test_packaged_history_is_the_astro_pi_replay_file(shared_data, monkeypatch):
    monkeypatch.delenv(visibility.TLE_ENV, raising=False)
    raw = (shared_data / "orbits" / "iss_tle.txt").read_bytes()
    packaged = lzma.decompress(visibility.PACKAGED_TLE.read_bytes())
    assert hashlib.sha256(packaged).hexdigest() == hashlib.sha256(raw).hexdigest()
    licence = (visibility.PACKAGED_TLE.parent / "LICENCE-astro-pi-replay.txt").read_text()
    assert licence == (shared_data / "orbits" / "LICENCE-astro-pi-replay.txt").read_text()
    assert visibility.default_tle_path() == visibility.PACKAGED_TLE
    assert np.array_equal(visibility.load_tles().epochs,
                          visibility.load_tles(shared_data / "orbits" / "iss_tle.txt").epochs)


def test_time_works_from_any_folder_without_shared_data(small_index, shared_data, tmp_path):
    when = "2017-02-25T10:20:30Z"
    env = {**os.environ, "EARTHLOC_SHARED": str(tmp_path / "nowhere"), "PYTHONWARNINGS": "ignore"}
    env.pop(visibility.TLE_ENV, None)
    photo = shared_data / "iss_mini" / "queries" / "ISS050-E-70536.jpg"
    res = subprocess.run([EARTHLOC, "locate", str(photo), "--index", str(small_index), "--time", when, "--top", "2"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode in (0, 1), res.stderr  # 1: the index may not cover where the ISS was
    assert "TLE" not in res.stderr and "Traceback" not in res.stderr
    got = json.loads(res.stdout)[0]["nadir"]
    st = visibility.iss_state(datetime(2017, 2, 25, 10, 20, 30, tzinfo=UTC),
                              shared_data / "orbits" / "iss_tle.txt")
    assert got == pytest.approx([st.lat, st.lon], abs=1e-9)


def test_env_var_points_at_a_newer_file(shared_data, tmp_path, monkeypatch):
    pair = visibility.load_tles(shared_data / "orbits" / "iss_tle.txt").lines[-1]  # the newest real TLE, alone
    newer = tmp_path / "iss.txt.gz"
    with gzip.open(newer, "wt") as f:
        f.write("ISS (ZARYA)\n" + "\n".join(pair) + "\n")
    monkeypatch.setenv(visibility.TLE_ENV, str(newer))
    tles = visibility.load_tles()
    assert len(tles.epochs) == 1 and tles.lines[0] == pair
    _, _, epoch = visibility.nearest_tle(datetime(2024, 9, 1, tzinfo=UTC))
    assert epoch.year == 2024
    with pytest.raises(InputError, match="no ISS TLE within"):  # only what the file holds
        visibility.iss_state(datetime(2010, 1, 1, tzinfo=UTC))
    monkeypatch.setenv(visibility.TLE_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="missing.txt.*EARTHLOC_TLE"):
        visibility.load_tles()

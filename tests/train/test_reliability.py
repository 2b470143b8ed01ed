"""Training runs on bad input and budgets: nothing resumed that is not there, no run folder left by a
failed start, and --max-minutes bounding the clustering encode too (real DB images)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from earthloc.errors import InputError
from earthloc.train.loop import TrainConfig, train


def _cfg(db: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(dbs=(str(db),), out=str(out), epochs=1, steps_per_epoch=2, batch_regions=4, years=2,
                       image_size=64, load_size=96, progress=False, **kw)


def test_resume_without_an_earlier_run_is_refused(iss_db, tmp_path):
    with pytest.raises(InputError, match="no earlier run"):
        train(_cfg(iss_db, tmp_path / "run", resume=True))
    assert not (tmp_path / "run").exists()


def test_a_train_failing_on_a_bad_image_leaves_no_run_folder(iss_db, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(iss_db, db)
    victim = sorted(db.rglob("*.jpg"))[-1]  # the latest-year image of a region: the clustering encode reads it
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated JPEG
    with pytest.raises(InputError, match=victim.name):
        train(_cfg(db, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # a folder that existed before is the user's: it stays
    (tmp_path / "mine").mkdir()
    with pytest.raises(InputError):
        train(_cfg(db, tmp_path / "mine"))
    assert (tmp_path / "mine").is_dir()


def test_max_minutes_bounds_the_clustering_encode(iss_db, tmp_path):
    t = time.perf_counter()
    res = train(_cfg(iss_db, tmp_path / "run", max_minutes=1e-9))
    assert "while clustering" in res.stopped
    assert [r["epoch"] for r in res.history] == [0]  # no epoch ran: the budget was spent before it
    assert time.perf_counter() - t < 120

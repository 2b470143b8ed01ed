"""A small real index (DB images cut from one iss_mini context, lite0-gem) and broken copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_index(shared_data, tmp_path_factory) -> Path:
    """Index folder over the DB images of the Iraq z10 context (its ``db_dir`` is beside it)."""
    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.index.store import Index
    from earthloc.models.registry import load_model
    from earthloc.sources.iss_mini import IssMini

    tmp = tmp_path_factory.mktemp("cli_index")
    source = IssMini.open(shared_data / "iss_mini").source()
    mosaics = [m for m in source.mosaics if m.path.stem == "10_0406_0630"]
    build_db(source, demo_places(source, mosaics), [2018], tmp / "db", workers=2, progress=False)
    Index.build(tmp / "db", load_model("lite0-gem"), tmp / "index", progress=False)
    return tmp / "index"


@pytest.fixture(scope="session")
def broken_indexes(small_index, tmp_path_factory) -> dict[str, Path]:
    """Copies of ``small_index`` with ``vectors.faiss`` or ``manifest.parquet`` cut to half its bytes."""
    tmp = tmp_path_factory.mktemp("broken_index")
    out = {}
    for key, name in (("tf", "vectors.faiss"), ("tm", "manifest.parquet")):
        shutil.copytree(small_index, tmp / key)
        f = tmp / key / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        out[key] = tmp / key
    return out

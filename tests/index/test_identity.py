"""Model identity and manifest digest: what must match between an index and the model / DB that query it.
Real models (lite0-gem, lite0-mixvpr: offline ImageNet weights) and the real official DB tile table."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.index.identity import ModelIdentity, manifest_digest
from earthloc.models.registry import load_model


def test_identity_of_a_model_and_its_check():
    gem = load_model("lite0-gem")
    ident = ModelIdentity.of(gem)
    assert (ident.name, ident.descriptor_dim, ident.image_size) == ("lite0-gem", 1280, gem.image_size)
    ident.check(load_model("lite0-gem"), "idx")  # the same model again: no error
    with pytest.raises(InputError, match="idx: index was built with model 'lite0-gem' .*lite0-mixvpr"):
        ident.check(load_model("lite0-mixvpr"), "idx")


def test_manifest_digest_follows_rows_and_order(shared_data):
    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv").head(50)
    m = pd.DataFrame({"tile": [f"{z:02d}_{r:04d}_{c:04d}" for z, r, c in zip(df.zoom, df.tile_row, df.tile_col)],
                      "year": df.year, "sha256": [f"s{i}" for i in range(len(df))]})
    want = hashlib.sha256("".join(f"{t}|{int(y)}|{s}\n" for t, y, s in zip(m.tile, m.year, m.sha256)).encode())
    assert manifest_digest(m) == want.hexdigest()
    assert manifest_digest(m.iloc[::-1]) != manifest_digest(m)  # order matters: rows are vector ids
    changed = m.copy()
    changed.loc[7, "sha256"] = "other"
    assert manifest_digest(changed) != manifest_digest(m)

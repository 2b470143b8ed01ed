"""EarthLoc2 through the unchanged index, locate and refinement code: 3072-d vectors, its 518-px preprocessing
recorded in the index, the index refusing another model, a rotated real DB image found with its rotation and
refined onto its footprint. Random weights (seeded), three real DB images."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from earthloc.errors import InputError
from earthloc.index.store import Index
from earthloc.locate import Locator
from earthloc.models.encoders import LocalEncoder
from earthloc.pipeline import LocateOptions, localize
from earthloc.records import Photo

CONTEXT = "14_6410_9928"  # a real Sentinel-2 context (Turkey/Syria, z14)


@pytest.mark.slow
def test_index_build_and_locate_with_earthloc2(shared_data, tmp_path):
    from earthloc.db.build import build_db
    from earthloc.demo import demo_places
    from earthloc.models.registry import load_model
    from earthloc.sources.iss_mini import IssMini

    source = IssMini.open(shared_data / "iss_mini").source()
    [mosaic] = [m for m in source.mosaics if m.path.stem == CONTEXT]
    build_db(source, demo_places(source, [mosaic])[:3], [2018], tmp_path / "db", workers=1, progress=False)
    torch.manual_seed(0)
    model = load_model("earthloc2", pretrained=False)
    index = Index.build(tmp_path / "db", LocalEncoder(model, batch_size=2), tmp_path / "index", progress=False)
    assert len(index) == 3 and index.dim == 3072
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["model"]["name"] == "earthloc2" and meta["model"]["image_size"] == 518
    assert json.loads(meta["model"]["preprocessing"]) == {"size": 518, "mean": [0.485, 0.456, 0.406],
                                                          "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}

    reopened = Index.open(tmp_path / "index", model=model)
    with pytest.raises(InputError, match="index was built with model 'earthloc2'"):
        Locator(reopened, load_model("lite0-gem"))

    row = reopened.manifest.iloc[1]
    img = Image.open(reopened.db_dir / row.path).convert("RGB").rotate(90)  # PIL: counter-clockwise
    img.save(tmp_path / "rot.png")
    photo = Photo(mrf="rot", path=tmp_path / "rot.png", nadir=(row.centre_lat, row.centre_lon))
    options = LocateOptions(top_k=3, refine=True, refine_top_k=1)  # refinement is model-agnostic: one candidate
    [res] = localize(Locator(reopened, LocalEncoder(model, batch_size=2)), [photo], options)
    assert res.error is None and len(res.candidates) == 3
    best = res.candidates[0]
    assert (best.tile.name, best.rotation_deg) == (row.tile, 90)
    assert best.score > 0.98
    # the photo IS that DB image: the refined footprint holds its centre, with many inliers
    assert res.inliers >= 100 and res.refined_footprint.contains(row.centre_lat, row.centre_lon)

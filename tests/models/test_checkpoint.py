"""Checkpoint reading and strict loading with real models (lite0-mixvpr / lite0-gem, offline weights):
plain, wrapped, DataParallel-prefixed and safetensors files load to the same weights; a file of another
model, a truncated file and a non-state_dict each give one error naming the file."""

from __future__ import annotations

import hashlib

import pytest
import safetensors.torch
import torch

from earthloc.errors import InputError
from earthloc.models.checkpoint import load_strict, read_state_dict
from earthloc.models.registry import load_model


@pytest.fixture(scope="module")
def trained():
    """Seeded random weights of lite0-mixvpr: weights no other file has."""
    torch.manual_seed(0)
    model = load_model("lite0-mixvpr", pretrained=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("form", ["plain", "wrapped", "module", "safetensors"])
def test_every_file_form_loads_the_same_weights(trained, tmp_path, form):
    path = tmp_path / ("w.safetensors" if form == "safetensors" else "w.pt")
    if form == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in trained.items()}, path)
    else:
        obj = {"plain": trained, "wrapped": {"state_dict": trained, "epoch": 3},
               "module": {f"module.{k}": v for k, v in trained.items()}}[form]
        torch.save(obj, path)
    assert read_state_dict(path).keys() == trained.keys()
    model = load_model("lite0-mixvpr", checkpoint=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert model.checkpoint_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_models_file_lists_what_does_not_fit(tmp_path):
    path = tmp_path / "gem.pt"
    torch.save(load_model("lite0-gem").state_dict(), path)
    with pytest.raises(InputError, match=r"checkpoint does not fit the model: \d+ missing keys: aggregator"):
        load_model("lite0-mixvpr", checkpoint=path)
    with pytest.raises(InputError, match="unexpected keys"):
        load_strict(torch.nn.Linear(2, 2), read_state_dict(path), path)


def test_unreadable_files_name_themselves(trained, tmp_path):
    good = tmp_path / "w.pt"
    torch.save(trained, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint") as err:
        read_state_dict(cut)
    assert str(cut) in str(err.value)
    odd = tmp_path / "odd.pt"
    torch.save({"epoch": 3}, odd)
    with pytest.raises(InputError, match="not a state_dict"):
        read_state_dict(odd)
    with pytest.raises(InputError, match="checkpoint file not found"):
        read_state_dict(tmp_path / "none.pt")

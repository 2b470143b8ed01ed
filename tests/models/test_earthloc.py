"""The official architecture: exact state_dict schema, official and TorchGeo checkpoints, bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from earthloc.errors import InputError
from earthloc.models.earthloc import to_torchgeo_keys
from earthloc.models.registry import load_model


def _schema(shared_data, name):
    return json.loads((shared_data / "models" / name).read_text())


def _entries(state):
    return [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state.items()]


def test_state_dict_equals_official_schema(shared_data, earthloc_random):
    schema = _schema(shared_data, "earthloc_state_dict_schema.json")
    assert _entries(earthloc_random.state_dict()) == schema["state_dict"]  # keys, order, shapes, dtypes
    assert earthloc_random.num_parameters() == schema["num_parameters"]


def test_default_freeze_matches_official_trainable_count(shared_data):
    schema = _schema(shared_data, "earthloc_state_dict_schema.json")
    m = load_model("earthloc", pretrained=False)
    m.freeze_default()
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == schema["num_trainable_parameters_default_freeze"]


def test_output_shape_norm_and_feature_map(shared_data, earthloc_random):
    schema = _schema(shared_data, "earthloc_state_dict_schema.json")
    x = torch.randn(schema["input"]["shape"])
    with torch.inference_mode():
        fmap = earthloc_random.backbone(x)
        y = earthloc_random(x)
    assert list(fmap.shape) == schema["backbone_feature_map_shape"]
    assert list(y.shape) == schema["output"]["shape"] and y.dtype == torch.float32
    assert torch.allclose(y.norm(dim=-1), torch.ones(1), atol=1e-5)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, earthloc_random):
    """The random-init model saved as the official training script does: a plain state_dict."""
    path = tmp_path_factory.mktemp("ckpt") / "best_trained_model.pt"
    torch.save(earthloc_random.state_dict(), path)
    return path


def test_official_format_save_load_identical(official_file, earthloc_random):
    loaded = load_model("earthloc", checkpoint=official_file)
    x = torch.randn(1, 3, 320, 320)
    with torch.inference_mode():
        assert torch.equal(loaded(x), earthloc_random(x))
    assert loaded.checkpoint_hash is not None and len(loaded.checkpoint_hash) == 64
    assert "official" in loaded.weights_source


def test_torchgeo_format_loads_identical(tmp_path, shared_data, earthloc_random):
    tg = to_torchgeo_keys(earthloc_random.state_dict())
    schema = _schema(shared_data, "earthloc_torchgeo_state_dict_schema.json")
    assert _entries(tg) == schema["state_dict"]  # the file we write is TorchGeo's layout exactly
    path = tmp_path / "earthloc-tg.pth"
    torch.save(tg, path)
    loaded = load_model("earthloc", checkpoint=path)
    assert "torchgeo" in loaded.weights_source
    x = torch.randn(1, 3, 320, 320)
    with torch.inference_mode():
        assert torch.equal(loaded(x), earthloc_random(x))


def test_partial_checkpoint_lists_missing_and_unexpected(tmp_path, earthloc_random):
    """Only the head saved (a typical partial file) plus a stray key: counted and listed, nothing loaded."""
    state = {k: v for k, v in earthloc_random.state_dict().items() if k.startswith("aggregator.")}
    state["head.extra"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        load_model("earthloc", checkpoint=path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: checkpoint does not fit the model: 260 missing keys: backbone.model.bn1.bias")
    assert "backbone.model.conv1.weight" in msg and "(252 more)" in msg
    assert "1 unexpected keys: head.extra" in msg


def test_wrong_shape_checkpoint(tmp_path, earthloc_random):
    state = dict(earthloc_random.state_dict())
    state["fc.bias"] = torch.zeros(10)
    state = {k: v for k, v in state.items() if k.startswith("fc.")}
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"1 shape mismatches: fc.bias \(10,\) != \(4096,\)"):
        load_model("earthloc", checkpoint=path)


def test_wrong_model_checkpoint(tmp_path, lite0_gem):
    path = tmp_path / "lite.pt"
    torch.save(lite0_gem.state_dict(), path)
    with pytest.raises(InputError, match="288 missing keys.*unexpected keys"):
        load_model("earthloc", checkpoint=path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.pth: not a readable PyTorch checkpoint"):
        load_model("earthloc", checkpoint=path)


def test_truncated_checkpoint(tmp_path, official_file):
    bad = tmp_path / "truncated.pt"
    with open(official_file, "rb") as f:
        bad.write_bytes(f.read(official_file.stat().st_size // 2))
    with pytest.raises(InputError, match="truncated.pt: not a readable"):
        load_model("earthloc", checkpoint=bad)


def test_no_weights_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("EARTHLOC_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="earthloc model fetch earthloc"):
        load_model("earthloc")


def test_unknown_model():
    with pytest.raises(InputError, match="unknown model; known: earthloc, lite0-gem"):
        load_model("resnet9000")

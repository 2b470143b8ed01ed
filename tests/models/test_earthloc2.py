"""EarthLoc2 (DINOv2-B/14 reg4 + SALAD) offline, with random weights: layout, SALAD maths, loading, preprocessing.

ViT-B at 518 px costs seconds per image on two shared cores, so tests that are about plumbing build the same
network for 112-px input (8 x 8 patches); the layout and size tests use the real 518-px model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from earthloc.errors import InputError
from earthloc.models import checkpoint as ckpt
from earthloc.models.earthloc2 import EarthLoc2Net, describe_state
from earthloc.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, load_image, to_tensor
from earthloc.models.registry import load_model, model_spec
from earthloc.models.salad import SALAD, log_optimal_transport


@pytest.fixture(scope="module")
def schema(shared_data) -> dict:
    return json.loads((shared_data / "models" / "earthloc2_state_dict_schema.json").read_text())


@pytest.fixture(scope="module")
def earthloc2_random():
    torch.manual_seed(0)
    return load_model("earthloc2", pretrained=False)


@pytest.fixture(scope="module")
def small():
    """The same network for 112-px input (64 patches), random weights: fast forward passes."""
    torch.manual_seed(1)
    return EarthLoc2Net(image_size=112).eval()


def test_state_dict_equals_released_schema(earthloc2_random, schema):
    sd = earthloc2_random.state_dict()
    assert list(sd) == list(schema["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == schema["state_dict"]
    assert len(sd) == schema["entries"] == 188
    assert earthloc2_random.num_parameters() == schema["parameters"] == 88_337_761
    assert earthloc2_random.descriptor_dim == schema["descriptor_dim"] == 3072
    assert earthloc2_random.image_size == schema["image_size"] == 518


def test_registry_spec_and_identity(earthloc2_random):
    spec = model_spec("earthloc2")
    assert (spec.descriptor_dim, spec.image_size) == (3072, 518)
    assert spec.published.average == (83.8, 93.0, 97.7) and spec.published.baseline == ("earthloc", (57.1, 74.4, 88.9))
    assert np.mean([v[0] for _, v in spec.published.per_area]) == pytest.approx(83.8, abs=0.05)
    ident = earthloc2_random.identity()
    assert ident["name"] == "earthloc2" and ident["checkpoint_sha256"] is None
    assert ident["preprocessing"] == {"size": 518, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                      "interpolation": "bilinear"}


def test_descriptor_is_3072_and_unit_length(small):
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        y = small(x)
    assert y.shape == (2, 3072) and y.dtype == torch.float32
    assert torch.allclose(y.norm(dim=-1), torch.ones(2), atol=1e-5)
    # The global token part and each cluster block are unit vectors before the final normalisation:
    # |y|^2 = (1 + 32) / 33 split as 1/33 for the token and 1/33 per cluster.
    assert torch.allclose(y[:, :1024].norm(dim=-1) ** 2, torch.full((2,), 1 / 33), atol=1e-5)
    blocks = y[:, 1024:].view(2, 64, 32)  # index j * 32 + i
    assert torch.allclose(blocks.norm(dim=1) ** 2, torch.full((2, 32), 1 / 33), atol=1e-5)


def test_patch_map_layout(small):
    """Tokens are class + 4 registers + 64 patches; the aggregator gets the patches as a [B, 768, 8, 8] map."""
    seen = {}
    hook = small.aggregator.score.register_forward_hook(lambda m, i, o: seen.update(map=i[0]))  # returns None
    try:
        with torch.inference_mode():
            small(torch.randn(1, 3, 112, 112))
    finally:
        hook.remove()
    tokens = small.backbone.forward_features(torch.zeros(1, 3, 112, 112))
    assert tokens.shape == (1, 1 + 4 + 64, 768)
    assert seen["map"].shape == (1, 768, 8, 8)


def _sinkhorn_prob_domain(s: np.ndarray, dust: float, iters: int) -> np.ndarray:
    """Independent reference: matrix scaling in the probability domain (float64), same marginals."""
    m, n = s.shape
    k = np.exp(np.vstack([s, np.full((1, n), dust)]))
    a = np.full(m + 1, 1.0 / (n + m))
    a[-1] *= n - m
    b = np.full(n, 1.0 / (n + m))
    u, v = np.ones(m + 1), np.ones(n)
    for _ in range(iters):
        u = a / (k @ v)
        v = b / (k.T @ u)
    return (u[:, None] * k * v[None, :]) * (n + m)


def test_sinkhorn_matches_probability_domain_reference():
    torch.manual_seed(0)
    s = torch.randn(2, 5, 40) * 3
    logp = log_optimal_transport(s.double(), torch.tensor(1.0, dtype=torch.float64), iters=3)
    for b in range(2):
        ref = _sinkhorn_prob_domain(s[b].double().numpy(), 1.0, 3)
        np.testing.assert_allclose(logp[b].exp().numpy(), ref, rtol=1e-10)
    p = logp.exp()
    # After the last (column) update every patch distributes exactly one unit of mass over clusters + dustbin;
    # with more iterations the rows approach their marginals: 1 per cluster, N - m for the dustbin.
    assert torch.allclose(p.sum(dim=1), torch.ones(2, 40, dtype=torch.float64))
    many = log_optimal_transport(s.double(), torch.tensor(1.0, dtype=torch.float64), iters=200).exp()
    assert torch.allclose(many.sum(dim=2)[:, :5], torch.ones(2, 5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(many.sum(dim=2)[:, 5], torch.full((2,), 35.0, dtype=torch.float64), atol=1e-4)


def test_salad_aggregation_order_by_hand():
    """V[j, i] = sum_n f[j, n] P[i, n], normalised over j, flattened j-major, after the normalised token."""
    torch.manual_seed(0)
    salad = SALAD(num_channels=6, num_clusters=3, cluster_dim=4, token_dim=5, hidden=7).eval()
    patches, token = torch.randn(1, 6, 3, 4), torch.randn(1, 6)
    with torch.inference_mode():
        out = salad(patches, token)[0].double().numpy()
        f = salad.cluster_features(patches).flatten(2)[0].double().numpy()  # [4, 12]
        s = salad.score(patches).flatten(2)[0].double().numpy()  # [3, 12]
        t = salad.token_features(token)[0].double().numpy()
    p = _sinkhorn_prob_domain(s, salad.dust_bin.item(), 3)[:-1]
    v = np.zeros((4, 3))
    for j in range(4):
        for i in range(3):
            v[j, i] = sum(f[j, n] * p[i, n] for n in range(12))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    ref = np.concatenate([t / np.linalg.norm(t), [v[j, i] for j in range(4) for i in range(3)]])
    np.testing.assert_allclose(out, ref / np.linalg.norm(ref), atol=1e-5)
    assert salad.out_dim == 5 + 4 * 3


def test_dropout_is_off_in_eval(small):
    x = torch.randn(1, 3, 112, 112)
    with torch.inference_mode():
        assert torch.equal(small(x), small(x))
    assert float(small.aggregator.dust_bin.detach()) == pytest.approx(1.0)  # the released init


def test_preprocessing_equals_the_release_pipeline(shared_data, earthloc2_random):
    """518 x 518 squash (bilinear, antialiased), ToTensor, ImageNet mean/std, as EarthLoc2's own transforms."""
    img = load_image(sorted((shared_data / "iss_mini" / "queries").glob("*.jpg"))[0])
    ours = to_tensor(img, prep=earthloc2_random.preprocessing)
    ref = T.Compose([T.Resize((518, 518)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(img)
    assert ours.shape == (3, 518, 518)
    assert (ours - ref).abs().max() < 0.02  # uint8 rounding of the resized image (1/255 / std)


def test_other_models_checkpoint_is_refused(tmp_path):
    torch.manual_seed(0)
    lite = load_model("lite0-gem")
    f = tmp_path / "lite.pth"
    torch.save(lite.state_dict(), f)
    with pytest.raises(InputError, match=r"not an EarthLoc2 checkpoint: it looks like an EfficientNet-Lite0"):
        load_model("earthloc2", checkpoint=f)
    official = {"backbone.model.layer3.0.conv1.weight": torch.zeros(1), "aggregator.mix.0.mix.0.weight": torch.zeros(1),
                "fc.weight": torch.zeros(1)}
    assert describe_state(official) == "the official EarthLoc model (ResNet-50 + MixVPR)"


def test_missing_and_unexpected_keys_are_listed(small):
    state = dict(small.state_dict())
    del state["aggregator.dust_bin"], state["backbone.norm.bias"]
    state["aggregator.extra"] = torch.zeros(3)
    with pytest.raises(InputError) as err:
        ckpt.load_strict(small, state, "w.torch")
    msg = str(err.value)
    assert "2 missing keys: aggregator.dust_bin, backbone.norm.bias" in msg
    assert "1 unexpected keys: aggregator.extra" in msg


@pytest.mark.slow
def test_released_layout_checkpoint_loads_from_cache(tmp_path, monkeypatch, earthloc2_random):
    """A full-size state_dict (wrapped as EarthLoc2's resume files are) copied into the cache folder is found
    by load_model('earthloc2') and loaded strictly; a 112-px model's file is refused for its pos_embed."""
    monkeypatch.setenv("EARTHLOC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="no weights: run `earthloc model fetch earthloc2`.*pawlo2013/EarthLoc2"):
        load_model("earthloc2")
    folder = tmp_path / "cache" / "models" / "earthloc2"
    folder.mkdir(parents=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in earthloc2_random.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 3}, folder / "best_model_95.torch")
    model = load_model("earthloc2")
    assert model.weights_source == "best_model_95.torch" and len(model.checkpoint_hash) == 64
    got = model.state_dict()
    assert all(torch.equal(got[k], state[k].float()) for k in state)
    small_file = tmp_path / "small.torch"
    torch.save(EarthLoc2Net(image_size=112).state_dict(), small_file)
    with pytest.raises(InputError, match=r"1 shape mismatches: backbone.pos_embed \(1, 64, 768\) != \(1, 1369, 768\)"):
        load_model("earthloc2", checkpoint=small_file)


def test_safetensors_checkpoint_is_read_and_corrupt_one_refused(tmp_path):
    import safetensors.torch

    salad = SALAD(num_channels=6, num_clusters=3, cluster_dim=4, token_dim=5, hidden=7)
    state = {f"aggregator.{k}": v.contiguous() for k, v in salad.state_dict().items()}
    f = tmp_path / "w.safetensors"
    safetensors.torch.save_file(state, f)
    got = ckpt.read_state_dict(f)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(InputError, match="not an EarthLoc2 checkpoint: it looks like an unknown model"):
        load_model("earthloc2", checkpoint=f)
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        ckpt.read_state_dict(f)


def test_image_size_must_fit_the_patch():
    with pytest.raises(InputError, match="image_size: must be a multiple of the 14-px patch, got 500"):
        EarthLoc2Net(image_size=500)

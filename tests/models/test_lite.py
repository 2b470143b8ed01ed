"""The offline models: their ImageNet weights are real, descriptors are stable, the trainable variant round-trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageEnhance

from earthloc.models.encode import encode
from earthloc.models.lite import FREEZE_BLOCKS, lite0_weights_path
from earthloc.models.preprocess import load_image, to_tensor
from earthloc.models.registry import load_model

CATEGORIES = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # metadata only, no download


def _sample_photo(name: str) -> Image.Image:
    """Real photos shipped inside installed packages (matplotlib, scikit-learn)."""
    if name == "grace_hopper.jpg":
        import matplotlib.cbook as cbook

        return load_image(cbook.get_sample_data(name, asfileobj=False))
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


@pytest.mark.parametrize("photo,label", [("grace_hopper.jpg", "military uniform"), ("flower.jpg", "daisy"),
                                         ("china.jpg", "bell cote")])
def test_imagenet_weights_classify_real_photos(lite0_gem, photo, label):
    """Our trunk + the packaged ImageNet classifier, at our 320-px TF-Lite preprocessing: sensible top-1."""
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    x = to_tensor(_sample_photo(photo), prep=lite0_gem.preprocessing)[None]
    with torch.inference_mode():
        logits = fc(lite0_gem.trunk(x).mean(dim=(2, 3)))
    assert CATEGORIES[int(logits.argmax())] == label


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95)))


def _bright(im: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(im).enhance(1.2)


@pytest.fixture(scope="module")
def places(contexts):
    """Eight different real places (every 25th context), 640 px."""
    return [load_image(p).resize((640, 640)) for p in contexts[::25][:8]]


def test_same_place_closer_than_other_places(places, lite0_gem):
    """JPEG q40, a 5% crop or +20% brightness keep a tile closer to itself than to any other place, by a margin.
    (Random weights cannot: their descriptors of all eight places agree to cosine > 0.99.)"""
    d0 = encode(lite0_gem, places, progress=False)[:, 0]
    other = d0 @ d0.T
    np.fill_diagonal(other, -1)
    closest_other = other.max(axis=1)
    assert closest_other.max() < 0.8
    for transform in (_jpeg, _crop, _bright):
        same = (encode(lite0_gem, [transform(p) for p in places], progress=False)[:, 0] * d0).sum(axis=1)
        assert (same > closest_other + 0.05).all(), transform.__name__


def test_lite0_mixvpr_freeze_and_checkpoint_roundtrip(tmp_path):
    m = load_model("lite0-mixvpr")
    assert m.descriptor_dim == 1024
    m.freeze_default()
    net = m.trunk.net
    assert not any(p.requires_grad for b in net._blocks[:FREEZE_BLOCKS] for p in b.parameters())
    assert all(p.requires_grad for b in net._blocks[FREEZE_BLOCKS:] for p in b.parameters())
    assert all(p.requires_grad for p in m.aggregator.parameters())
    with torch.no_grad():  # pretend training moved the head
        m.aggregator.row_proj.bias.add_(0.5)
    path = tmp_path / "finetuned.pt"
    torch.save(m.state_dict(), path)
    loaded = load_model("lite0-mixvpr", checkpoint=path)
    x = torch.randn(2, 3, 320, 320)
    with torch.inference_mode():
        assert torch.equal(loaded(x), m.eval()(x))
        assert not torch.allclose(load_model("lite0-mixvpr")(x), loaded(x))  # the seeded head differs
    assert loaded.checkpoint_hash != load_model("lite0-mixvpr").checkpoint_hash


def test_lite0_mixvpr_head_is_reproducible():
    x = torch.randn(1, 3, 320, 320)
    with torch.inference_mode():
        assert torch.equal(load_model("lite0-mixvpr")(x), load_model("lite0-mixvpr")(x))

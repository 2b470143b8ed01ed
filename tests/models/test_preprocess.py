"""Image loading: every mode to RGB, the decompression-bomb guard, clear errors for bad files, official tensors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from earthloc.errors import InputError
from earthloc.models.preprocess import MAX_PIXELS, Preprocessing, load_image, to_tensor


@pytest.fixture(scope="module")
def tile(contexts) -> Image.Image:
    """A real Sentinel-2 context, 256 px to keep things fast."""
    return load_image(contexts[0]).resize((256, 256))


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"),
                                      ("CMYK", "jpg"), ("CMYK", "tif"), ("I;16", "png"), ("1", "png")])
def test_modes_become_rgb(tmp_path, tile, mode, ext):
    if mode == "I;16":
        src = Image.fromarray(np.asarray(tile.convert("L"), dtype=np.uint16) * 200)
        assert src.mode == "I;16"
    elif mode == "P":
        src = tile.quantize(256)  # adaptive palette, as real palette PNGs have
    else:
        src = tile.convert(mode)
    path = tmp_path / f"img.{ext}"
    src.save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == tile.size
    a = np.asarray(img, dtype=np.int16)
    grey = np.asarray(tile.convert("L"), dtype=np.int16)
    if mode in ("L", "LA", "I;16"):
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
        if mode == "I;16":  # stretched from its real range to the full 0..255: the same picture, full contrast
            assert a.min() == 0 and a.max() == 255
            assert np.corrcoef(a[..., 0].ravel(), grey.ravel())[0, 1] > 0.999
        else:
            assert np.abs(a[..., 0] - grey).mean() < 0.01
    if mode in ("RGBA", "CMYK", "P"):
        tol = {"RGBA": 0.01, "CMYK": 6.0, "P": 4.0}[mode]
        assert np.abs(a - np.asarray(tile, dtype=np.int16)).mean() < tol


def test_alpha_composited_on_black(tmp_path, tile):
    rgba = tile.convert("RGBA")
    rgba.putalpha(Image.new("L", tile.size, 0))
    path = tmp_path / "transparent.png"
    rgba.save(path)
    assert np.asarray(load_image(path)).max() == 0


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height px (8-bit grey) with one tiny IDAT: a decompression bomb shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))  # 10 Gpx claimed, 100 bytes on disk
    assert path.stat().st_size < 200
    with pytest.raises(InputError, match=r"bomb.png: image .*decompression bomb"):
        load_image(path)
    assert 100_000 * 100_000 > MAX_PIXELS


def test_bomb_between_our_limit_and_pillows(tmp_path):
    """15,000 x 10,000 = 150 Mpx: under Pillow's error threshold (179 Mpx), over ours; refused from the header."""
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(15_000, 10_000))
    with pytest.raises(InputError, match=r"big.png: image is 15000x10000 px, over the 120,000,000 px limit"):
        load_image(path)


def test_bomb_limit_is_a_parameter(contexts):
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(contexts[0], max_pixels=1000)


def test_truncated_jpeg_names_file(tmp_path, contexts):
    data = contexts[0].read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"cut.jpg: cannot read image \(image file is truncated"):
        load_image(path)


@pytest.mark.parametrize("content,match", [(b"hello, not an image", "cannot identify image file"), (b"", "cannot")])
def test_not_an_image(tmp_path, content, match):
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"notes.jpg: .*{match}"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")


def test_to_tensor_official_preprocessing(tile):
    """320x320 squash, /255, ImageNet mean/std, checked against torchvision's own transforms."""
    import torchvision.transforms as T

    wide = tile.resize((300, 200))  # non-square: squashed, not cropped
    x = to_tensor(wide, 320)
    ref = T.Compose([T.Resize((320, 320)), T.ToTensor(),
                     T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(wide)
    assert x.shape == (3, 320, 320) and x.dtype == torch.float32
    assert torch.allclose(x, ref, atol=1e-5)


def test_preprocessing_dict_is_plain():
    d = Preprocessing().as_dict()
    assert d == {"size": 320, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "interpolation": "bilinear"}

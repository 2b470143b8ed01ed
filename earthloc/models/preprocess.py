"""Image loading and the tensor preprocessing of the descriptor models.

The official EarthLoc preprocessing is: RGB, resize to 320x320 (squash, ignoring the aspect ratio, as the
official pipeline did for photos and as DB images are square anyway), /255, ImageNet mean/std. Every model
carries a :class:`Preprocessing` so indexes can record exactly what produced their vectors.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from earthloc.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Decompression-bomb guard: the largest image we agree to decode, in pixels. Astronaut photos reach about
# 60 Mpx (e.g. 9,000 x 6,000 Nikon D5 frames) and DB mosaics are 1 Mpx; 2x the largest real photo is plenty,
# while a 10 Kb PNG claiming 100,000 x 100,000 px would need tens of GB of RAM.
MAX_PIXELS = 120_000_000


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: square resize to ``size`` px, then (x/255 - mean) / std.

    ``interpolation`` is the PIL filter name used for the resize (bilinear with antialias, like torchvision
    ``Resize`` on PIL images).
    """

    size: int = 320
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def as_dict(self) -> dict:
        """Plain JSON-able dict (what an index stores to recognise the model that built it)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB. Alpha is composited on black (no-data in mosaics is black)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit greyscale: stretch the actual range to 0..255 instead of clipping at 255.
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file fully and return it as RGB.

    Raises InputError naming the file when it is missing, not an image, truncated, or larger than
    ``max_pixels`` (decompression-bomb guard; checked from the header, before decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:
        # Pillow's own bomb check only warns below 2x its limit; ours (below) is the one that decides.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(path, f"image is {w}x{h} px, over the {max_pixels:,} px limit "
                                       "(possible decompression bomb)")
            ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
            img.load()
            return _to_rgb(img)
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(path, f"image too large (possible decompression bomb): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL.UnidentifiedImageError is an OSError; truncated JPEG/PNG data raises OSError on load().
        raise InputError(path, f"cannot read image ({err})") from None


def resize_square(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resize to ``size`` x ``size`` px (squash, no crop), antialiased."""
    if img.size == (size, size):
        return img
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    return img.resize((size, size), resample=resample, reducing_gap=None)


def normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 or [0,1] float tensor [..., 3, S, S] -> normalised float32."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def to_uint8_tensor(img: Image.Image, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """RGB PIL image -> uint8 tensor [3, size, size] (resized; not normalised)."""
    img = resize_square(_to_rgb(img), size, interpolation)
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def to_tensor(img: Image.Image, size: int = 320, prep: Preprocessing | None = None) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, S, S], resized and normalised; S = ``prep.size`` when ``prep`` is
    given (a model's own preprocessing), else ``size`` with ImageNet mean/std."""
    prep = prep or Preprocessing(size=size)
    return normalize(to_uint8_tensor(img, prep.size, prep.interpolation), prep)

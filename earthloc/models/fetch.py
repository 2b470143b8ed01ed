"""Downloading the official EarthLoc weights (TorchGeo's Hugging Face mirror) into the cache, atomically.

The file name follows the torch.hub convention ``<name>-<first 8 hex of sha256>.pth``; the download is
checked against that prefix before it is renamed into place. Never called by tests.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from earthloc.atomic import atomic_path
from earthloc.config import cache_dir
from earthloc.errors import InputError


@dataclass(frozen=True)
class RemoteWeights:
    """A downloadable weights file. ``filename`` carries the sha256 prefix (torch.hub convention)."""

    url: str
    filename: str

    @property
    def sha256_prefix(self) -> str:
        m = re.search(r"-([0-9a-f]{8,64})\.\w+$", self.filename)
        return m.group(1) if m else ""


EARTHLOC_WEIGHTS = RemoteWeights(
    url="https://huggingface.co/torchgeo/earthloc/resolve/main/earthloc-8b632e30.pth",
    filename="earthloc-8b632e30.pth",
)


def weights_dir() -> Path:
    """``<cache_dir>/models``: where fetched weights live."""
    return cache_dir() / "models"


def cached_path(remote: RemoteWeights) -> Path:
    return weights_dir() / remote.filename


def fetch(remote: RemoteWeights, force: bool = False, progress: bool = True, timeout_s: float = 60.0) -> Path:
    """Download ``remote`` into the cache (temp file + rename) and verify its sha256 prefix.

    Returns the cached path (no download when it is already there, unless ``force``). No internet, an HTTP
    error or a hash mismatch -> InputError naming the URL; nothing is left in the cache then.
    """
    import httpx
    from tqdm import tqdm

    dest = cached_path(remote)
    if dest.is_file() and not force:
        return dest
    h = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, \
                httpx.stream("GET", remote.url, follow_redirects=True, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                raise InputError(remote.url, f"download failed: HTTP {resp.status_code}")
            total = int(resp.headers.get("content-length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=remote.filename, disable=not progress) as bar:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            digest = h.hexdigest()
            if not digest.startswith(remote.sha256_prefix):
                raise InputError(remote.url, f"downloaded file has sha256 {digest[:16]}..., expected prefix "
                                             f"{remote.sha256_prefix}: corrupt download, nothing kept")
    except httpx.HTTPError as err:
        raise InputError(remote.url, f"cannot download ({type(err).__name__}: {err}); no internet? "
                                     f"Download it elsewhere and pass it with --checkpoint, or copy it to "
                                     f"{dest}") from None
    return dest

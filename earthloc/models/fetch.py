"""Downloading released weights into the cache, atomically and hash-checked.

- :func:`fetch`: a plain URL (the official EarthLoc weights, TorchGeo's mirror). The file name follows the
  torch.hub convention ``<name>-<first 8 hex of sha256>.pth``; the download is checked against that prefix
  before it is renamed into place.
- :func:`fetch_hub`: a Hugging Face model repository through huggingface_hub (EarthLoc2), checked against the
  Hub's LFS sha256 of the file.

Tests run both against servers on 127.0.0.1, never the internet.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from earthloc.atomic import atomic_path
from earthloc.config import cache_dir
from earthloc.errors import InputError
from earthloc.models.checkpoint import sha256_file


@dataclass(frozen=True)
class RemoteWeights:
    """A downloadable weights file. ``filename`` carries the sha256 prefix (torch.hub convention)."""

    url: str
    filename: str

    @property
    def sha256_prefix(self) -> str:
        """The sha256 prefix (hex) carried in ``filename``, or "" if none."""
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
    """Where the weights file of ``remote`` lives in the local weights cache."""
    return weights_dir() / remote.filename


def fetch(remote: RemoteWeights, force: bool = False, progress: bool = True, timeout_s: float = 60.0) -> Path:
    """Download ``remote`` into the cache (temp file + rename) and verify its sha256 prefix.

    Returns the cached path (no download when it is already there, unless ``force``). No internet, an HTTP
    error or a hash mismatch -> InputError naming the URL; nothing is left in the cache then.
    """
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
                                     f"Download it elsewhere and pass it as checkpoint, or copy it to "
                                     f"{dest}") from None
    return dest


# --- Weights on the Hugging Face Hub (huggingface_hub: resumable download, HF_ENDPOINT, tokens) -----------
WEIGHT_SUFFIXES = (".torch", ".pth", ".pt", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class HubWeights:
    """A weights file in a Hugging Face model repository. ``filename`` None: the repository's only weights
    file (EarthLoc2's release does not document its file name; its training script saves ``*.torch``)."""

    repo_id: str
    filename: str | None = None
    revision: str = "main"
    local_name: str = "hub"  # folder under weights_dir() that holds the file

    @property
    def page(self) -> str:
        """The repository's web page at ``revision``."""
        return f"https://huggingface.co/{self.repo_id}/tree/{self.revision}"

    @property
    def local_dir(self) -> Path:
        """Where the downloaded weights are kept (under the weights cache)."""
        return weights_dir() / self.local_name


EARTHLOC2_WEIGHTS = HubWeights(repo_id="pawlo2013/EarthLoc2", local_name="earthloc2")


def _hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once at import), so a mirror set later still counts."""
    return os.environ.get("HF_ENDPOINT") or None


def local_weights(remote: HubWeights) -> list[Path]:
    """Weights files already in ``remote.local_dir`` (fetched, or copied there by hand), sorted by name."""
    if not remote.local_dir.is_dir():
        return []
    return sorted(p for p in remote.local_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def offline_hint(remote: HubWeights) -> str:
    """What to download by hand and where to put it."""
    what = remote.filename or f"the weights file ({'/'.join('*' + s for s in WEIGHT_SUFFIXES[:3])})"
    return (f"download {what} from {remote.page} on a machine with internet and put it in {remote.local_dir}/ "
            f"(or pass it as checkpoint)")


def _pick_weights_file(remote: HubWeights, files: dict[str, str | None]) -> str:
    """The file to download among ``files`` (repo path -> LFS sha256 or None)."""
    if remote.filename is not None:
        if remote.filename not in files:
            raise InputError(remote.page, f"no file {remote.filename!r} in the repository "
                                          f"(it has: {', '.join(sorted(files)) or 'nothing'})")
        return remote.filename
    weights = sorted(f for f in files if Path(f).suffix in WEIGHT_SUFFIXES)
    if len(weights) != 1:
        found = ", ".join(weights) if weights else "none"
        raise InputError(remote.page, f"expected exactly one weights file ({', '.join(WEIGHT_SUFFIXES)}), "
                                      f"found {found}")
    return weights[0]


def _unreachable(err: BaseException) -> bool:
    """True for a network failure: an OSError (refused, DNS, offline) or the Hub client's transport errors,
    which come from its HTTP library (httpx / httpx2, by huggingface_hub version) and share no base class."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415  optional hub client

    return (isinstance(err, (OSError, ConnectionError, LocalEntryNotFoundError))
            or type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests"))


def fetch_hub(remote: HubWeights, force: bool = False, progress: bool = True) -> Path:
    """Download ``remote`` with huggingface_hub into ``remote.local_dir`` and check its sha256 against the
    Hub's LFS record of that file; returns the local path.

    The Hub is ``HF_ENDPOINT`` when set (a mirror, or a test server on 127.0.0.1). The file list (with LFS
    sha256s) and the download both use the commit the list came from, so they cannot disagree.
    huggingface_hub writes to a temp file and renames it, so an interrupted download never looks finished; a
    hash mismatch deletes the file. An already present file with the right hash is not downloaded again
    (unless ``force``). No connection -> InputError saying which file to download by hand and where to put it.
    """
    from huggingface_hub import HfApi, hf_hub_download  # noqa: PLC0415  optional hub client, slow import
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415  (hub client, as above)
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars  # noqa: PLC0415  hub

    endpoint = _hub_endpoint()
    where = f"{endpoint or 'https://huggingface.co'}/{remote.repo_id}"
    if not progress:
        disable_progress_bars()
    try:
        info = HfApi(endpoint=endpoint).model_info(remote.repo_id, revision=remote.revision, files_metadata=True)
        files = {f.rfilename: (f.lfs.sha256 if f.lfs else None) for f in info.siblings or []}
        name = _pick_weights_file(remote, files)
        if (expected := files[name]) is None:
            raise InputError(where, f"the Hub lists no sha256 for {name} (not stored with LFS): cannot verify it")
        dest = remote.local_dir / name
        if dest.is_file() and not force and sha256_file(dest) == expected:
            return dest
        path = Path(hf_hub_download(remote.repo_id, name, revision=info.sha or remote.revision,
                                    local_dir=remote.local_dir, endpoint=endpoint, force_download=force))
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise InputError(where, f"Hub request failed (HTTP {status}); {offline_hint(remote)}") from None
    except Exception as err:
        if not _unreachable(err):
            raise
        raise InputError(where, f"cannot reach the Hugging Face Hub ({type(err).__name__}); no internet? "
                                f"{offline_hint(remote)}") from None
    finally:
        if not progress:
            enable_progress_bars()
    if (digest := sha256_file(path)) != expected:
        path.unlink()
        raise InputError(path, f"downloaded file has sha256 {digest[:16]}..., the Hub says {expected[:16]}...: "
                               "corrupt download, nothing kept")
    return path

"""The index folder: DB descriptors in FAISS + the manifest aligned with them + the model's identity.

Layout of an index folder (format version :data:`FORMAT_VERSION`)::

    index.json        format version, model identity, rotations, precision, manifest digest, db_dir
    vectors.faiss     FAISS index; vector id = row * len(db_rotations) + rotation slot
    manifest.parquet  one row per DB image (the DB manifest, re-ordered into geo cells)

Rows are stored in *geo-cell order* (1-degree latitude bands, then longitude), so the DB images
whose centres lie in a photo's visible disk form a few dozen contiguous runs of vectors: the
visible-disk search reads only those runs (views, no copy) instead of scanning the whole index,
and is still exact. fp32 indexes are read through a bf16 copy and the rows that can reach the top k
are re-scored in fp32 (:mod:`earthloc.index.scan`): half the bytes, same result. Scores are inner products of L2-normalised descriptors (cosine similarity,
higher is better); on unit vectors this ranks exactly like the official L2 distance
(``|q - x|^2 = 2 - 2 q.x``).

Rotations (:class:`earthloc.index.formats.RotationMode`): ``QUERY`` stores each DB image once
(rotation 0) and the photo is encoded at 0/90/180/270 degrees; ``DB`` stores every DB image at the
four rotations (the official, 4x larger layout) and the photo once. Either way :meth:`Index.search`
merges the rotations of one DB image into one hit carrying the best score and the rotation that gave it.

This module holds the :class:`Index` (persistence and search); the model identity, the formats, the
geographic row order and the resumable chunked encoding of a build live beside it
(:mod:`~earthloc.index.identity`, :mod:`~earthloc.index.formats`, :mod:`~earthloc.index.order`,
:mod:`~earthloc.index.chunks`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch
from threadpoolctl import ThreadpoolController

from earthloc.atomic import atomic_path, write_text
from earthloc.db.manifest import load as load_manifest
from earthloc.errors import InputError
from earthloc.index.chunks import encode_db, remove_chunks
from earthloc.index.formats import ROTATIONS, RotationMode, new_faiss
from earthloc.index.identity import ModelIdentity, manifest_digest
from earthloc.index.order import geo_order, runs
from earthloc.index.scan import bounds, fp32_error, make_shadow
from earthloc.models.encoders import Encoder, as_encoder

FORMAT_VERSION = 1
_BLOCK_VECTORS = 4096  # score at most this many vectors per task (bounds memory, balances threads)
# A disk's rim leaves gaps of 1-3 rows between long runs (rows of one latitude band just outside it):
# reading such gaps and dropping them costs less than one more kernel call per run.
_SCAN_GAP = 64

# The runs of a visible disk are scored by a few Python threads, each calling single-threaded BLAS
# (numpy releases the GIL). Letting BLAS thread every small product instead costs a thread wake-up
# and barrier per run, which on a busy machine made the search 8x slower (measured).
_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None:
            # sized from the CPUs this process may use, not from OpenMP: the pool is first made inside
            # _single_threaded_blas(), where OpenMP reports 1 thread (that made the search single-threaded)
            _POOL_WORKERS = max(1, len(os.sched_getaffinity(0)))
            _POOL = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="earthloc-search")
        return _POOL


def search_threads() -> int:
    """Threads that score the row ranges of a search (fp16/PQ indexes): one per CPU this process may use.
    The pool is made on first use, typically while BLAS is limited to one thread."""
    with _single_threaded_blas():
        _pool()
    return _POOL_WORKERS


_BLAS = None


def _single_threaded_blas():
    """Context manager limiting BLAS libraries to one thread each (threadpoolctl)."""
    global _BLAS

    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


@dataclass(frozen=True)
class Hit:
    """One ranked search result: manifest ``row``, the DB rotation (degrees counter-clockwise applied
    to the DB image, EarthLoc's convention) that matched best, and its cosine ``score``."""

    row: int
    rotation_deg: int
    score: float


class Index:
    """DB descriptors (FAISS) + manifest (pandas, aligned with vector ids) + metadata.

    Build with :meth:`build` (from a DB folder and a model) or :meth:`from_vectors`; open a saved
    folder with :meth:`open`; query with :meth:`search`.
    """

    def __init__(self, index: faiss.Index, manifest: pd.DataFrame, meta: dict, path: Path | None = None):
        self.faiss = index
        self.manifest = manifest.reset_index(drop=True)
        self.meta = meta
        self.path = path
        self.identity = ModelIdentity(**meta["model"])
        self.db_rotations: tuple[int, ...] = tuple(meta["db_rotations"])
        self.precision: str = meta["precision"]
        codes, size = index.codes, index.code_size  # type: ignore[attr-defined]  # flat-codes indexes only
        self._codes = faiss.rev_swig_ptr(codes.data(), index.ntotal * size).reshape(
            index.ntotal, size) if index.ntotal else np.zeros((0, size), np.uint8)
        self.centre_lat = self.manifest["centre_lat"].to_numpy(np.float64)
        self.centre_lon = self.manifest["centre_lon"].to_numpy(np.float64)
        self._band = np.floor(self.centre_lat)  # ascending: rows are in geo-cell order
        self._xyz: np.ndarray | None = None
        self._shadow: Any = None  # bf16 shadow of fp32 vectors for the two-stage exact scan (made on first use)
        self._shadow_lock = threading.Lock()

    def centre_xyz(self) -> np.ndarray:
        """(3, N) float64: x, y, z of the unit vectors of the DB image centres on the sphere (cached).
        Three contiguous rows, so a dot product with a point is three vector ops, not a BLAS call."""
        if self._xyz is None:
            lat, lon = np.radians(self.centre_lat), np.radians(self.centre_lon)
            self._xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
        return self._xyz

    def lat_range(self, south: float, north: float) -> tuple[int, int]:
        """Rows ``[start, stop)`` holding every DB image whose centre latitude is in [south, north]
        (a superset by at most the 1-degree bands at both ends; one contiguous range in geo-cell order)."""
        return (int(np.searchsorted(self._band, np.floor(south), "left")),
                int(np.searchsorted(self._band, np.floor(north), "right")))

    # --- properties ------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Name of the model that built the index."""
        return self.identity.name

    @property
    def dim(self) -> int:
        """Descriptor length D."""
        return self.identity.descriptor_dim

    @property
    def rotations(self) -> RotationMode:
        """:attr:`RotationMode.QUERY` (1x index, rotate the photo) or :attr:`RotationMode.DB` (4x rotated)."""
        return RotationMode(self.meta["rotations"])

    @property
    def db_dir(self) -> Path | None:
        """The DB folder the index was built from (absolute), if recorded."""
        return Path(self.meta["db_dir"]) if self.meta.get("db_dir") else None

    def __len__(self) -> int:
        return len(self.manifest)

    def nbytes(self) -> int:
        """Bytes of the serialised FAISS index (codes + codebooks)."""
        return int(faiss.serialize_index(self.faiss).nbytes)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_vectors(cls, vectors: np.ndarray, manifest: pd.DataFrame, identity: ModelIdentity,
                     rotations: str | RotationMode = RotationMode.QUERY, precision: str = "fp32",
                     db_dir: Path | None = None) -> Index:
        """An in-memory index from descriptors ``(N, R_db, D)`` float32 aligned with ``manifest`` rows.

        ``R_db`` is 1 for ``rotations="query"`` and 4 (0/90/180/270) for ``rotations="db"``.
        Rows are re-ordered into geo cells; vectors are expected L2-normalised.
        """
        db_rotations = RotationMode.parse(rotations).db_rotations
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 3 or vectors.shape[0] != len(manifest) or vectors.shape[1] != len(db_rotations):
            raise InputError("vectors", f"expected shape ({len(manifest)}, {len(db_rotations)}, D), got {vectors.shape}")
        order = geo_order(manifest["centre_lat"].to_numpy(), manifest["centre_lon"].to_numpy())
        manifest = manifest.iloc[order].reset_index(drop=True)
        flat = np.ascontiguousarray(vectors[order].reshape(-1, vectors.shape[2]))
        train = flat if len(flat) <= 65536 else flat[np.random.default_rng(0).choice(len(flat), 65536, replace=False)]
        index = new_faiss(flat.shape[1], precision, train)
        index.add(flat)
        return cls.from_faiss(index, manifest, identity, rotations, precision, db_dir)

    @classmethod
    def from_faiss(cls, index: faiss.Index, manifest: pd.DataFrame, identity: ModelIdentity,
                   rotations: str | RotationMode = RotationMode.QUERY, precision: str = "fp32",
                   db_dir: Path | None = None) -> Index:
        """Wrap a filled FAISS flat-codes index whose vectors follow ``manifest`` rows, which must already
        be in geo-cell order (:func:`geo_order`); used to build very large indexes chunk by chunk."""
        mode = RotationMode.parse(rotations)
        db_rotations = mode.db_rotations
        order = geo_order(manifest["centre_lat"].to_numpy(), manifest["centre_lon"].to_numpy())
        if not np.array_equal(order, np.arange(len(manifest))):
            raise InputError("manifest", "rows are not in geo-cell order (sort with geo_order first)")
        if index.ntotal != len(manifest) * len(db_rotations):
            raise InputError("index", f"{index.ntotal} vectors for {len(manifest)} rows x {len(db_rotations)} rotations")
        meta = {
            "format_version": FORMAT_VERSION,
            "model": asdict(identity),
            "rotations": str(mode),
            "db_rotations": list(db_rotations),
            "precision": precision,
            "n_images": len(manifest),
            "manifest_sha256": manifest_digest(manifest),
            "db_dir": str(Path(db_dir).resolve()) if db_dir else None,
        }
        return cls(index, manifest, meta)

    @classmethod
    def build(cls, db_dir: Path, encoder: Encoder | torch.nn.Module, out_dir: Path,
              rotations: str | RotationMode = RotationMode.QUERY, precision: str = "fp32", chunk: int = 1024,
              progress: bool = True) -> Index:
        """Encode every image of the DB folder ``db_dir`` with ``encoder`` and save the index to ``out_dir``.

        ``encoder``: an :class:`earthloc.models.encoders.Encoder` (here or on Ray), or a bare model
        (encoded here on the CPU, 32 images x rotations per forward pass).
        Resumable (:mod:`earthloc.index.chunks`): descriptors are saved per chunk of ``chunk`` images and
        reused by a rerun; the finished folder appears only when everything is written.
        """
        encoder = as_encoder(encoder, batch_size=32)
        mode = RotationMode.parse(rotations)
        db_dir = Path(db_dir)
        manifest = load_manifest(db_dir)
        if manifest.empty:
            raise InputError(db_dir, "the DB has no images")
        identity = ModelIdentity.of(encoder.model)
        vectors = encode_db(db_dir, manifest, encoder, Path(out_dir), mode, chunk, progress)
        index = cls.from_vectors(vectors, manifest, identity, mode, precision, db_dir=db_dir)
        index.save(out_dir)
        remove_chunks(Path(out_dir), manifest, mode, identity)
        return index

    # --- persistence -----------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        """Write the folder; ``index.json`` goes last, so a folder without it is incomplete."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "index.json").unlink(missing_ok=True)
        with atomic_path(out_dir / "vectors.faiss") as tmp:
            faiss.write_index(self.faiss, str(tmp))
        with atomic_path(out_dir / "manifest.parquet") as tmp:
            self.manifest.to_parquet(tmp, index=False)
        write_text(out_dir / "index.json", json.dumps(self.meta, indent=2) + "\n")
        self.path = out_dir

    @classmethod
    def open(cls, path: Path, model=None, db_dir: Path | None = None) -> Index:
        """Open a saved index folder.

        ``model``: if given, it must be the model the index was built with (name, checkpoint hash,
        descriptor size, input size), else :class:`InputError`. ``db_dir``: if given, its manifest must
        hold exactly the images the index was built from. The stored manifest must match the digest
        and vector count recorded at build time.
        """
        path = Path(path)
        meta_file = path / "index.json"
        if not meta_file.is_file():
            raise InputError(path, "not an index folder (no index.json; build it with `earthloc index build`)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(meta_file, f"not valid JSON ({err})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(meta_file, f"index format version {meta.get('format_version')!r}, "
                                        f"this earthloc reads {FORMAT_VERSION}; rebuild the index")
        for name in ("vectors.faiss", "manifest.parquet"):
            if not (path / name).is_file():
                raise InputError(path / name, "missing from the index folder")
        try:
            manifest = pd.read_parquet(path / "manifest.parquet")
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(path / "manifest.parquet", f"unreadable ({type(err).__name__}: truncated or "
                                                        "not Parquet); rebuild the index") from None
        if manifest_digest(manifest) != meta["manifest_sha256"] or len(manifest) != meta["n_images"]:
            raise InputError(path / "manifest.parquet", "does not match the index (digest or row count differs "
                                                        "from index.json); rebuild the index")
        try:
            index = faiss.read_index(str(path / "vectors.faiss"))
        except RuntimeError:  # FAISS reports a short or garbled file as a RuntimeError with its C++ trace
            raise InputError(path / "vectors.faiss", "unreadable (truncated or not a FAISS index); "
                                                     "rebuild the index") from None
        if index.ntotal != len(manifest) * len(meta["db_rotations"]) or index.d != meta["model"]["descriptor_dim"]:
            raise InputError(path / "vectors.faiss", f"holds {index.ntotal} vectors of {index.d}-d, expected "
                                                     f"{len(manifest) * len(meta['db_rotations'])} of "
                                                     f"{meta['model']['descriptor_dim']}-d")
        out = cls(index, manifest, meta, path)
        if model is not None:
            out.identity.check(model, path)
        if db_dir is not None:
            out.check_db(db_dir)
        return out

    def check_db(self, db_dir: Path) -> None:
        """Raise :class:`InputError` unless ``db_dir`` holds exactly the images of this index."""
        db = load_manifest(Path(db_dir))
        key = lambda df: set(zip(df["tile"], df["year"].astype(int), df["sha256"]))  # noqa: E731
        mine, theirs = key(self.manifest), key(db)
        if mine != theirs:
            raise InputError(db_dir, f"DB manifest does not match the index: {len(theirs - mine)} images not in "
                                     f"the index, {len(mine - theirs)} index images missing or changed")

    def vectors(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Float32 vectors ``[start, stop)`` by vector id (row * len(db_rotations) + rotation slot), shape
        (n, D): a view of the stored codes for fp32, decoded for fp16 / PQ."""
        return self._vectors(start, self.faiss.ntotal if stop is None else stop)

    # --- search ----------------------------------------------------------------------------
    def _vectors(self, start: int, stop: int) -> np.ndarray:
        """Float32 vectors ``[start, stop)`` (vector ids): a view for fp32, decoded otherwise."""
        codes = self._codes[start:stop]
        if self.precision == "fp32":
            return codes.view(np.float32)
        if self.precision == "fp16":
            return codes.view(np.float16).astype(np.float32)
        return self.faiss.sa_decode(np.ascontiguousarray(codes))

    def _score_rows(self, q: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Best score and best (query rotation x DB rotation) slot of rows ``[start, stop)`` for ``q`` (R, D)."""
        nd = len(self.db_rotations)
        best, slot = np.empty(stop - start, np.float32), np.empty(stop - start, np.int64)
        step = max(1, _BLOCK_VECTORS // nd)
        for a in range(start, stop, step):
            b = min(stop, a + step)
            s = (self._vectors(a * nd, b * nd) @ q.T).reshape(b - a, nd * len(q))  # [row, db_rot * R + q_rot]
            slot[a - start:b - start] = s.argmax(axis=1)
            best[a - start:b - start] = s.max(axis=1)
        return best, slot

    def shadow(self, n_queries: int = 4):
        """The bf16 shadow of the fp32 vectors (:mod:`earthloc.index.scan`), made on first call (about
        1.5 s per GB of fp32 vectors on 2 cores) and kept in RAM (half the size of the vectors).
        ``n_queries``: descriptors per photo, to compile the scan kernels for."""
        with self._shadow_lock:
            if self._shadow is None:
                self._shadow = make_shadow(self._vectors(0, self.faiss.ntotal), n_queries)
            return self._shadow

    def _score_ids(self, q: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """fp32 best score and best slot of the given ``rows`` (gathered) for ``q`` (R, D).

        In torch, like the bf16 scan before it: numpy's BLAS threads spin after each call and, run
        between two torch kernels, slowed the scan 2-4x (measured)."""
        nd = len(self.db_rotations)
        ids = torch.from_numpy((rows[:, None] * nd + np.arange(nd)).ravel())
        with torch.inference_mode():
            v = torch.from_numpy(self._vectors(0, self.faiss.ntotal)).index_select(0, ids)
            s = (v @ torch.from_numpy(np.array(q, dtype=np.float32)).T).reshape(len(rows), nd * len(q)).numpy()
        return s.max(axis=1), s.argmax(axis=1)

    def _exact_fp32(self, q: np.ndarray, mask: np.ndarray | None, k: int):
        """Rows, fp32 best scores and slots of every row of ``mask`` that can be in the top ``k``.

        A bf16 scan (:func:`earthloc.index.scan.bounds`: half the bytes of fp32) gives each row an
        interval holding its exact best score; rows whose upper end reaches the k-th best lower end
        are re-scored in fp32. Rows left out score below at least k re-scored ones, so the top k
        (ties included) is the fp32 top k.
        """
        nd, n = len(self.db_rotations), len(self)
        rows = np.flatnonzero(mask) if mask is not None else np.arange(n)
        if len(rows) > k:
            spans = runs(mask, max_gap=_SCAN_GAP) if mask is not None else [(0, n)]
            sh = self.shadow(len(q))
            lo, up = bounds(sh, q, [(a * nd, b * nd) for a, b in spans])
            lo = lo.reshape(-1, nd * len(q)).max(axis=1)  # per row: best over DB x query rotations
            up = up.reshape(-1, nd * len(q)).max(axis=1)
            scanned = np.concatenate([np.arange(a, b) for a, b in spans])
            if mask is not None:  # gap rows were read with their runs; drop them
                inside = mask[scanned]
                scanned, lo, up = scanned[inside], lo[inside], up[inside]
            kth_low = -np.partition(-lo, k - 1)[k - 1]
            rows = scanned[up >= kth_low - 2 * fp32_error(q, sh.vmax)]
        best, slot = self._score_ids(q, rows)
        return rows, best, slot

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               query_rotations: Sequence[int] | None = None) -> list[list[Hit]]:
        """Exact top-``k`` DB images for each photo.

        ``queries``: (Q, R, D) float32, photo ``i`` encoded at ``query_rotations`` (default: (0,) if
        R == 1, else 0/90/180/270). ``mask``: None (search everything), (N,) or (Q, N) bool over
        manifest rows: only rows where it is True are searched (the visible disk). Each row appears
        at most once, with its best score over all rotations; the returned rotation is the one to
        apply to the DB image (counter-clockwise), i.e. DB rotation minus query rotation.
        Results equal a brute-force search over every vector followed by the mask filter and the
        per-row merge. Ties are broken by row number.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 2:
            queries = queries[:, None, :]
        if queries.ndim != 3 or queries.shape[2] != self.dim:
            raise InputError("queries", f"expected (Q, R, {self.dim}) descriptors, got {queries.shape}")
        qrot = tuple(query_rotations) if query_rotations is not None else ((0,) if queries.shape[1] == 1 else ROTATIONS)
        if len(qrot) != queries.shape[1]:
            raise InputError("query_rotations", f"{len(qrot)} rotations for {queries.shape[1]} descriptors per photo")
        nq, n = len(queries), len(self)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            mask = np.broadcast_to(mask, (nq, n)) if mask.ndim == 1 else mask
            if mask.shape != (nq, n):
                raise InputError("mask", f"expected ({nq}, {n}) booleans, got {mask.shape}")
        # slot = db_slot * R + q_slot  ->  rotation applied to the DB image
        rot_of_slot = np.array([(d - r) % 360 for d in self.db_rotations for r in qrot], dtype=np.int64)
        out: list[list[Hit]] = []
        for i in range(nq):
            m = None if mask is None else mask[i]
            if n == 0 or (m is not None and not m.any()):
                out.append([])
                continue
            q = queries[i]
            if self.precision == "fp32":  # exact, in two stages (bf16 scan, fp32 re-score)
                rows, best, slot = self._exact_fp32(q, m, k)
            else:  # approximate codes: decode and score every row
                step = max(1, _BLOCK_VECTORS // len(self.db_rotations))
                blocks = [(a, min(b, a + step)) for a0, b in (runs(m) if m is not None else [(0, n)])
                          for a in range(a0, b, step)]
                with _single_threaded_blas():
                    scored = list(_pool().map(lambda ab: self._score_rows(q, *ab), blocks))
                rows = np.concatenate([np.arange(a, b) for a, b in blocks])
                best = np.concatenate([s for s, _ in scored])
                slot = np.concatenate([sl for _, sl in scored])
            if len(best) > k:  # keep every row tied with the k-th score, so ties break by row number
                kth = -np.partition(-best, k - 1)[k - 1]
                top = np.flatnonzero(best >= kth)
            else:
                top = np.arange(len(best))
            top = top[np.lexsort((rows[top], -best[top]))][:k]
            out.append([Hit(int(rows[j]), int(rot_of_slot[slot[j]]), float(best[j])) for j in top])
        return out

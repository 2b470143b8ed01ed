"""Build an EarthLoc database: one 1024-px JPEG per (place, year) in the official layout, plus a manifest.

Resumable by construction:

- each image is written to a temp file in its folder and renamed, so a file under its final name is
  always complete;
- each finished image is appended (flushed) to ``manifest.journal.jsonl``; a re-run skips every image
  already on disk and only hashes images whose journal line a kill lost;
- sources that fetch over the network keep their own tile cache (see :class:`earthloc.sources.wmts.WmtsSource`),
  so tiles fetched before a kill are not fetched again.

Images are processed grouped by year and zoom, in row-major order, so the 50%-overlapping neighbours
that share tiles are built close together in time.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from earthloc.atomic import atomic_path, write_bytes
from earthloc.db import manifest
from earthloc.errors import InputError
from earthloc.geo.names import DbImageName
from earthloc.geo.tiles import TileBlock
from earthloc.sources.base import ImageSkipped, TileMissing, TileSource, compose

JPEG_QUALITY = 90
MISSING = "missing.csv"  # images a build could not make: path, tile, year, reason


@dataclass(frozen=True)
class MissingImage:
    """A DB image not built because its source lacks one of its tiles (see :class:`TileMissing`)."""

    path: str  # relative to the DB folder, official layout
    tile: str  # place name ZZ_RRRR_CCCC
    year: int
    reason: str  # the source's error, naming the tile's URL or file


@dataclass(frozen=True)
class BuildReport:
    """What one build did. ``images`` = planned (place, year) pairs; ``missing`` = those not built because a
    tile is permanently missing (listed in ``missing.csv``); ``resubmitted`` = Ray batches run again after
    their worker died (0 for a local build); ``left_out`` = images the source declined (:class:`ImageSkipped`)."""

    out_dir: Path
    images: int
    written: int
    skipped: int
    seconds: float
    manifest: Path
    missing: tuple[MissingImage, ...] = ()
    resubmitted: int = 0
    left_out: tuple[str, ...] = ()  # "place year: reason" of images the source declined (ImageSkipped)

    @property
    def images_per_s(self) -> float:
        """Images written per second of wall time (0 when nothing was written)."""
        return self.written / self.seconds if self.written and self.seconds > 0 else 0.0


def encode_jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image (baseline, 4:2:0, deterministic for a given Pillow build)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _plan(places: Iterable[TileBlock], years: Sequence[int]):
    """(year, place) pairs in build order: year, zoom, row, col."""
    uniq = sorted(set(places), key=lambda b: (b.zoom, b.row, b.col))
    for b in uniq:
        if b.size != 4:
            raise InputError(f"place {b.name}", f"DB places are 4x4 tiles, got size {b.size}")
    return [(y, b) for y in sorted(set(years)) for b in uniq]


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError):
        return False


def make_image(source: TileSource, block: TileBlock, year: int, quality: int, size: int) -> bytes:
    """The JPEG bytes of one DB image: compose its tiles, resize to ``size`` px if needed, encode.

    The same function runs in a local build's threads and in Ray workers, so both give the same bytes.
    """
    img = compose(source, block, year)
    if img.width != size:  # same footprint, fewer pixels (the models see 320 px anyway)
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return encode_jpeg(img, quality)


def _make_one(source: TileSource, block: TileBlock, year: int, out_dir: Path, quality: int, size: int) -> dict:
    """Make and atomically write one DB image; return its manifest row."""
    return save_image(out_dir, block, year, make_image(source, block, year, quality, size))


def save_image(out_dir: Path, block: TileBlock, year: int, data: bytes) -> dict:
    """Write one DB image's bytes under its official name (atomically); return its manifest row."""
    name = DbImageName.for_tile(block, year)
    write_bytes(out_dir / name.relpath, data)
    return manifest.row_for(name, hashlib.sha256(data).hexdigest())


def missing_image(block: TileBlock, year: int, reason: str) -> MissingImage:
    """The record of a DB image that a missing tile kept from being built (``reason``: the source's error)."""
    return MissingImage(str(DbImageName.for_tile(block, year).relpath), block.name, year, reason)


@dataclass
class BuildState:
    """A build between planning and finishing: what to do, what is done, the open journal.

    Shared by the local build and :func:`earthloc.db.ray_build.build_db_on_ray`, so resume, journal
    and manifest are the same code for both.
    """

    out_dir: Path
    plan: list[tuple[int, TileBlock]]
    todo: list[tuple[int, TileBlock]]
    rows: dict[str, dict]
    journal: manifest.Journal
    t0: float
    missing: list[MissingImage] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # "place year: reason" (ImageSkipped)

    def done(self, row: dict) -> None:
        """Record one finished image (journaled at once: a kill after this loses nothing)."""
        self.rows[row["path"]] = row
        self.journal.append(row)

    def finish(self, resubmitted: int = 0) -> BuildReport:
        """Write ``manifest.parquet`` (and ``missing.csv`` when images are missing), drop the journal."""
        self.journal.close()
        path = manifest.write(self.out_dir, manifest.frame(list(self.rows.values())))
        (self.out_dir / manifest.JOURNAL).unlink(missing_ok=True)
        missing_csv = self.out_dir / MISSING
        if self.missing:
            table = pd.DataFrame([asdict(m) for m in self.missing]).sort_values("path")
            with atomic_path(missing_csv) as tmp:
                table.to_csv(tmp, index=False)
        else:
            missing_csv.unlink(missing_ok=True)  # an earlier run's list: this run built them
        done = len(self.todo) - len(self.missing) - len(self.left_out)
        return BuildReport(self.out_dir, len(self.plan), done, len(self.plan) - len(self.todo),
                           time.perf_counter() - self.t0, path, tuple(self.missing), resubmitted,
                           tuple(sorted(self.left_out)))


def start_build(years_served: Sequence[int], places: Iterable[TileBlock], years: Sequence[int],
                out_dir: str | os.PathLike, size: int) -> BuildState:
    """Check the request, plan it, and find what an earlier run into ``out_dir`` already built (resume).

    Images on disk whose journal line a kill lost are hashed and journaled now; ``todo`` is the rest,
    in build order (year, zoom, row, col).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    bad_years = [y for y in years if y not in years_served]
    if bad_years:
        raise InputError(f"years {bad_years}", f"not served by this source (it has {list(years_served)})")
    if not 16 <= size <= 4096:
        raise InputError(f"size {size}", "DB images must be 16 to 4096 pixels per side")
    plan = _plan(places, years)
    for stale in (out_dir / "database").glob("*/*/.*.tmp"):  # temp files of a killed run (never renamed)
        stale.unlink(missing_ok=True)

    known = {}
    if (out_dir / manifest.MANIFEST).is_file() or (out_dir / manifest.JOURNAL).is_file():
        known = {r["path"]: r for r in manifest.load(out_dir).to_dict("records")}
    state = BuildState(out_dir, plan, [], dict(known), manifest.Journal(out_dir), t0)
    checked_size = False
    for year, block in plan:
        name = DbImageName.for_tile(block, year)
        rel = str(name.relpath)
        target = out_dir / rel
        if target.is_file() and (rel in known or _decodes(target)):
            if not checked_size:  # one folder, one image size: resuming must not mix them
                with Image.open(target) as im:
                    if im.width != size:
                        state.journal.close()
                        raise InputError(out_dir, f"holds {im.width}-px DB images, size is {size}: "
                                                  "build into another folder")
                checked_size = True
            if rel not in known:  # finished, but the kill came before its journal line
                state.done(manifest.row_for(name, manifest.sha256_file(target)))
            continue
        state.todo.append((year, block))
    return state


def build_db(
    source: TileSource,
    places: Iterable[TileBlock],
    years: Sequence[int],
    out_dir: str | os.PathLike,
    workers: int = 8,
    quality: int = JPEG_QUALITY,
    progress: bool = True,
    size: int = 1024,
) -> BuildReport:
    """Write the DB images of ``places`` x ``years`` under ``out_dir`` and its ``manifest.parquet``.

    ``workers`` threads compose images in parallel (each pulls its 16 tiles from ``source``). Images
    already present are skipped (resume). Rows of images built earlier into the same folder stay in
    the manifest. An image whose source permanently lacks a tile (:class:`TileMissing`) is recorded in
    the report and ``missing.csv`` and the build goes on (a re-run tries it again); an image the source
    declines (:class:`ImageSkipped`) is listed in ``left_out``; any other error
    stops the build, what was finished is kept and a re-run resumes.
    ``size``: pixels per side of the written images (official: 1024 = 4 tiles of 256); one folder holds
    one size, so resuming with another size is an :class:`InputError`.
    """
    state = start_build(source.years, places, years, out_dir, size)
    bar = tqdm(total=len(state.plan), initial=len(state.plan) - len(state.todo), unit="img", desc="db build",
               disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: dict[Future, tuple[int, TileBlock]] = {}
            it = iter(state.todo)
            window = max(1, workers) * 4  # bounded queue: memory stays flat on global builds
            try:
                while True:
                    while len(pending) < window and (job := next(it, None)) is not None:
                        fut = pool.submit(_make_one, source, job[1], job[0], state.out_dir, quality, size)
                        pending[fut] = job
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        year, block = pending.pop(fut)
                        try:
                            state.done(fut.result())  # re-raises the image's error
                        except TileMissing as err:
                            state.missing.append(missing_image(block, year, str(err)))
                        except ImageSkipped as skip:  # declined by the source: no image, listed in the report
                            state.left_out.append(str(skip))
                        bar.update(1)
            except BaseException:
                for fut in pending:  # don't start queued images; running ones finish (atomic writes)
                    fut.cancel()
                raise
    except BaseException:
        state.journal.close()
        raise
    finally:
        bar.close()
    return state.finish()

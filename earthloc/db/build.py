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
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from earthloc.atomic import write_bytes
from earthloc.db import manifest
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.base import ImageSkipped, TileSource, compose

JPEG_QUALITY = 90


@dataclass(frozen=True)
class BuildReport:
    """What one :func:`build_db` call did. ``images`` = planned (place, year) pairs."""

    out_dir: Path
    images: int
    written: int
    skipped: int
    seconds: float
    manifest: Path
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


def _make_one(source: TileSource, block: TileBlock, year: int, out_dir: Path, quality: int, size: int) -> dict | str:
    """Compose, (resize,) encode and atomically write one DB image; return its manifest row, or the
    reason (a str) when the source declines the image (:class:`ImageSkipped`)."""
    from earthloc.geo.names import DbImageName

    name = DbImageName.for_tile(block, year)
    try:
        img = compose(source, block, year)
    except ImageSkipped as skip:
        return str(skip)
    if img.width != size:  # same footprint, fewer pixels (the models see 320 px anyway)
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    data = encode_jpeg(img, quality)
    write_bytes(out_dir / name.relpath, data)
    return manifest.row_for(name, hashlib.sha256(data).hexdigest())


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
    the manifest. Any error stops the build; what was finished is kept and a re-run resumes.
    ``size``: pixels per side of the written images (official: 1024 = 4 tiles of 256); one folder holds
    one size, so resuming with another size is an :class:`InputError`.
    """
    from earthloc.geo.names import DbImageName

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad_years = [y for y in years if y not in source.years]
    if bad_years:
        raise InputError(f"years {bad_years}", f"not served by this source (it has {list(source.years)})")
    if not 16 <= size <= 4096:
        raise InputError(f"--size {size}", "DB images must be 16 to 4096 pixels per side")
    plan = _plan(places, years)
    for stale in (out_dir / "database").glob("*/*/.*.tmp"):  # temp files of a killed run (never renamed)
        stale.unlink(missing_ok=True)

    known = {}
    if (out_dir / manifest.MANIFEST).is_file() or (out_dir / manifest.JOURNAL).is_file():
        known = {r["path"]: r for r in manifest.load(out_dir).to_dict("records")}
    rows = dict(known)
    left_out: list[str] = []
    journal = manifest.Journal(out_dir)
    todo = []
    checked_size = False
    for year, block in plan:
        name = DbImageName.for_tile(block, year)
        rel = str(name.relpath)
        target = out_dir / rel
        if target.is_file() and (rel in known or _decodes(target)):
            if not checked_size:  # one folder, one image size: resuming must not mix them
                with Image.open(target) as im:
                    if im.width != size:
                        raise InputError(out_dir, f"holds {im.width}-px DB images, --size is {size}: "
                                                  "build into another folder")
                checked_size = True
            if rel not in known:  # finished, but the kill came before its journal line
                rows[rel] = manifest.row_for(name, manifest.sha256_file(target))
                journal.append(rows[rel])
            continue
        todo.append((year, block))

    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="img", desc="db build", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: set[Future] = set()
            it = iter(todo)
            window = max(1, workers) * 4  # bounded queue: memory stays flat on global builds
            try:
                while True:
                    while len(pending) < window and (job := next(it, None)) is not None:
                        pending.add(pool.submit(_make_one, source, job[1], job[0], out_dir, quality, size))
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        row = fut.result()  # re-raises the first error; finished rows are journaled
                        bar.update(1)
                        if isinstance(row, str):  # declined by the source: no image, listed in the report
                            left_out.append(row)
                            continue
                        rows[row["path"]] = row
                        journal.append(row)
            except BaseException:
                for fut in pending:  # don't start queued images; running ones finish (atomic writes)
                    fut.cancel()
                raise
    finally:
        bar.close()
        journal.close()

    path = manifest.write(out_dir, manifest.frame(list(rows.values())))
    (out_dir / manifest.JOURNAL).unlink(missing_ok=True)
    return BuildReport(out_dir, len(plan), len(todo) - len(left_out), len(plan) - len(todo),
                       time.perf_counter() - t0, path, tuple(sorted(left_out)))

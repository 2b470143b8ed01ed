"""Check a DB folder: every listed image exists, decodes fully, is square, has the manifest's checksum
and a file name that matches its manifest row; no JPEG under ``database/`` is left out of the manifest."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from earthloc.db import manifest
from earthloc.errors import InputError
from earthloc.geo.names import parse_db_name


@dataclass(frozen=True)
class VerifyReport:
    """``problems``: (path relative to the DB folder, what is wrong), sorted by path."""

    db_dir: Path
    checked: int
    problems: tuple[tuple[str, str], ...]
    checksums: bool

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _check(db_dir: Path, row: dict) -> str | None:
    path = db_dir / row["path"]
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"missing or unreadable ({err.strerror or err})"
    if row.get("sha256") and hashlib.sha256(data).hexdigest() != row["sha256"]:
        return "checksum differs from the manifest"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every scanline: truncated or corrupt data raises here
            size, fmt = im.size, im.format
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"does not decode ({err})"
    if fmt != "JPEG" or size[0] != size[1]:
        return f"expected a square JPEG, got {fmt} {size[0]}x{size[1]}"
    try:
        name = parse_db_name(path.name)
    except InputError as err:
        return f"not an official DB name ({err.problem})"
    if (name.tile.name, name.year) != (row["tile"], int(row["year"])):
        return f"name says {name.tile.name}/{name.year}, manifest says {row['tile']}/{row['year']}"
    return None


def verify_db(db_dir: str | os.PathLike, workers: int = 4, progress: bool = True) -> VerifyReport:
    """Decode and check every image of ``db_dir`` against its manifest (or its names when there is none)."""
    db_dir = Path(db_dir)
    df = manifest.load(db_dir)
    has_manifest = (db_dir / manifest.MANIFEST).is_file()
    rows = df.to_dict("records")
    problems: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda r: _check(db_dir, r), rows)
        for row, problem in tqdm(zip(rows, results), total=len(rows), unit="img", desc="db verify",
                                 disable=not progress):
            if problem:
                problems.append((row["path"], problem))
    listed = set(df.path)
    for p in (db_dir / "database").glob("**/*"):
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg") and p.relative_to(db_dir).as_posix() not in listed:
            problems.append((p.relative_to(db_dir).as_posix(), "JPEG not listed in the manifest"))
    if has_manifest and df.sha256.isna().any():
        problems.append((manifest.MANIFEST, f"{int(df.sha256.isna().sum())} rows without a checksum"))
    return VerifyReport(db_dir, len(rows), tuple(sorted(problems)), has_manifest)

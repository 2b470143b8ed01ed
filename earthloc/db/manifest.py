"""The DB manifest: one row per DB image, stored as ``<db_dir>/manifest.parquet``.

Columns (see :data:`COLUMNS`): ``tile`` (``ZZ_RRRR_CCCC``), ``zoom, row, col, year``, ``path`` (relative
to ``db_dir``, official layout), the four footprint corners ``ll_lat … lr_lon`` in official order
LL, UL, UR, LR, ``centre_lat, centre_lon`` (as written in the official file name: the midpoint of
the lat/lon bounds), ``area_km2`` (int, from the name) and ``sha256`` (hex of the JPEG bytes; None
when the manifest was rebuilt from file names alone).

While a build runs, finished images are appended to ``manifest.journal.jsonl`` (one JSON object per
line, flushed per image) so a killed build loses nothing; the Parquet file is rewritten atomically at
the end and the journal removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from earthloc.atomic import atomic_path
from earthloc.errors import InputError
from earthloc.geo.names import scan_db_folder

MANIFEST = "manifest.parquet"
JOURNAL = "manifest.journal.jsonl"
COLUMNS = (
    "tile", "zoom", "row", "col", "year", "path",
    "ll_lat", "ll_lon", "ul_lat", "ul_lon", "ur_lat", "ur_lon", "lr_lat", "lr_lon",
    "centre_lat", "centre_lon", "area_km2", "sha256",
)
_DTYPES = {"zoom": "int64", "row": "int64", "col": "int64", "year": "int64", "area_km2": "int64"}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def row_for(name, sha256: str | None) -> dict:
    """Manifest row of a :class:`earthloc.geo.names.DbImageName` (``name.relpath`` is the path)."""
    (ll, ul, ur, lr) = ((round(a, 5), round(b, 5)) for a, b in name.corners)  # as written in the name
    return {
        "tile": name.tile.name, "zoom": name.tile.zoom, "row": name.tile.row, "col": name.tile.col,
        "year": int(name.year), "path": str(name.relpath),
        "ll_lat": ll[0], "ll_lon": ll[1], "ul_lat": ul[0], "ul_lon": ul[1],
        "ur_lat": ur[0], "ur_lon": ur[1], "lr_lat": lr[0], "lr_lon": lr[1],
        "centre_lat": round(name.centre[0], 5), "centre_lon": round(name.centre[1], 5),
        "area_km2": int(name.area_km2), "sha256": sha256,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> manifest DataFrame with the canonical column order and dtypes, sorted by zoom/row/col/year."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype(_DTYPES)
    df["sha256"] = df["sha256"].astype(object).where(df["sha256"].notna(), None)
    df = df.drop_duplicates(subset=["path"], keep="last")
    return df.sort_values(["zoom", "row", "col", "year"], kind="stable").reset_index(drop=True)


def write(db_dir: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write ``df`` as ``<db_dir>/manifest.parquet`` atomically; return the path."""
    path = Path(db_dir) / MANIFEST
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def scan(db_dir: str | os.PathLike) -> pd.DataFrame:
    """Manifest rebuilt from the official file names under ``<db_dir>/database`` (``sha256`` = None)."""
    rows = []
    for name, relpath in scan_db_folder(db_dir):
        row = row_for(name, None)
        row["path"] = relpath
        rows.append(row)
    return frame(rows)


def load(db_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per DB image of ``db_dir`` (columns :data:`COLUMNS`).

    Reads ``manifest.parquet`` (plus the journal of an unfinished build, if any); for an official-layout
    folder without a manifest, builds the table from the file names (``sha256`` None).
    """
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise InputError(db_dir, "DB folder not found")
    path = db_dir / MANIFEST
    if path.is_file():
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise InputError(path, f"cannot read manifest ({err})") from err
        if missing := set(COLUMNS) - set(df.columns):
            raise InputError(path, f"manifest lacks columns {sorted(missing)}")
        journal = read_journal(db_dir)
        if journal:
            df = frame(df[list(COLUMNS)].to_dict("records") + journal)
        return df
    if (db_dir / JOURNAL).is_file():
        return frame(read_journal(db_dir))
    if not (db_dir / "database").is_dir():
        raise InputError(db_dir, "neither manifest.parquet nor an official database/ folder")
    return scan(db_dir)


def read_journal(db_dir: str | os.PathLike) -> list[dict]:
    """Rows of an unfinished build's journal; a line torn by a kill is ignored."""
    path = Path(db_dir) / JOURNAL
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and set(COLUMNS) <= set(row):
            rows.append(row)
    return rows


class Journal:
    """Append-only log of finished images; each line is flushed so a SIGKILL loses at most a torn line."""

    def __init__(self, db_dir: str | os.PathLike):
        self.path = Path(db_dir) / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # end a torn last line so the next row starts clean
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        """Append one finished image's row (JSON) and flush it to disk."""
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the journal file."""
        self._f.close()

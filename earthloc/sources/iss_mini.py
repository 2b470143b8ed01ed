"""The iss_mini dataset (``<shared>/data/iss_mini``): its files, its CSV columns, typed records.

The one place that knows the dataset's layout (``/work/shared/data/README.md`` describes it):

* ``queries.csv`` + ``queries/<mrf>.jpg``: the real ISS photos (read by :func:`earthloc.photos.load_photos`);
* ``contexts.csv`` + ``contexts/*.jpg``: georeferenced Sentinel-2-cloudless 2018 mosaics, each a 12x12
  block of Web-Mercator tiles around one retrieval candidate (:class:`ContextRecord`);
* ``candidates.csv``: per photo, the 10 candidates (4x4 blocks) of a worldwide EarthLoc-style search, in
  rank order, with the rotation retrieval chose (:class:`CandidateRecord`).

Every other module reads iss_mini through :class:`IssMini` (or :func:`read_candidates` /
:func:`read_contexts` for a CSV of the same shape given by a user).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from earthloc.config import data_dir
from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.photos import load_photos
from earthloc.records import Candidate, Localization, Photo
from earthloc.sources.mosaic import Mosaic, MosaicSource

FOLDER = "iss_mini"
QUERIES_CSV, QUERIES_DIR = "queries.csv", "queries"
CONTEXTS_CSV, CANDIDATES_CSV = "contexts.csv", "candidates.csv"
YEAR = 2018  # the contexts are Sentinel-2 cloudless, 2018 edition
CANDIDATE_TILES = 4  # candidates are 4x4-tile blocks (EarthLoc DB images)
CONTEXT_COLUMNS = ("file", "zoom", "tile_row0", "tile_col0", "tiles_per_side", "width_px", "height_px", "year",
                   "candidate_tile")
CANDIDATE_COLUMNS = ("mrf", "rank", "zoom", "tile_row", "tile_col")  # plus optional ones, see CandidateRecord


@dataclass(frozen=True)
class ContextRecord:
    """One row of ``contexts.csv``: a mosaic image of ``block`` (12x12 tiles) around ``candidate_tile``.

    ``path`` is absolute (the CSV's folder joined with its ``file`` column); ``width_px``/``height_px`` are
    the image's pixel size; ``candidate_tile`` is the name (``ZZ_RRRR_CCCC``) as the CSV spells it.
    """

    path: Path
    block: TileBlock
    width_px: int
    height_px: int
    year: int
    candidate_tile: str

    @property
    def mosaic(self) -> Mosaic:
        """The context as a :class:`~earthloc.sources.mosaic.Mosaic` (a tile source's unit)."""
        b = self.block
        return Mosaic(self.path, b.zoom, b.row, b.col, b.size, self.width_px, self.height_px, self.year)


@dataclass(frozen=True)
class CandidateRecord:
    """One row of ``candidates.csv``: the ``rank``-th (0-based) candidate of photo ``mrf``.

    ``rotation_deg``: the photo rotation retrieval matched it at (0/90/180/270; ``None`` when empty or
    the column is absent); ``context_file``: its context image relative to the dataset folder, or ``None``;
    ``tile``: ``None`` for the unreferenced PNG candidates (``bounds_known`` 0: no tile, so not scorable),
    whose image is ``image_file`` (relative to the dataset folder).
    """

    mrf: str
    rank: int
    tile: TileBlock | None
    rotation_deg: int | None
    context_file: str | None
    image_file: str | None

    @property
    def bounds_known(self) -> bool:
        """Whether the candidate's tile block is known (False for the unreferenced PNG candidates)."""
        return self.tile is not None


def _read_table(path: Path, need: tuple[str, ...], what: str) -> pd.DataFrame:
    """The CSV as text cells (empty cells as ""), checked for the ``need`` columns."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(path, f"not found (expected the {what})") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable {what} ({err})") from None
    if missing := set(need) - set(df.columns):
        raise InputError(path, f"missing columns {sorted(missing)}")
    return df


def read_contexts(csv: Path) -> list[ContextRecord]:
    """The rows of a ``contexts.csv`` in file order; image paths relative to the CSV's folder."""
    csv = Path(csv)
    df = _read_table(csv, CONTEXT_COLUMNS, "iss_mini contexts table")
    try:
        return [ContextRecord(csv.parent / r.file,
                              TileBlock(int(r.zoom), int(r.tile_row0), int(r.tile_col0), int(r.tiles_per_side)),
                              int(r.width_px), int(r.height_px), int(r.year), r.candidate_tile)
                for r in df.itertuples(index=False)]
    except ValueError as err:
        raise InputError(csv, f"bad number ({err})") from None


def read_candidates(csv: Path) -> list[CandidateRecord]:
    """The rows of a ``candidates.csv`` (iss_mini's shape) in file order.

    Required columns: ``mrf, rank, zoom, tile_row, tile_col``; optional: ``retrieval_rotation_deg``,
    ``context_file``, ``bounds_known`` (absent or empty: known).
    """
    csv = Path(csv)
    df = _read_table(csv, CANDIDATE_COLUMNS, "candidates table")
    out = []
    for i, r in enumerate(df.to_dict("records")):
        try:
            rot = r.get("retrieval_rotation_deg", "")
            known = r.get("bounds_known", "") != "0"
            tile = TileBlock(int(r["zoom"]), int(r["tile_row"]), int(r["tile_col"]), CANDIDATE_TILES) if known else None
            out.append(CandidateRecord(r["mrf"], int(r["rank"]), tile, int(float(rot)) if rot else None,
                                       r.get("context_file") or None, r.get("image_file") or None))
        except ValueError as err:
            raise InputError(f"{csv} row {i + 2}", f"bad number ({err})") from None
    return out


@dataclass(frozen=True)
class IssMini:
    """The iss_mini folder ``root`` (holding ``queries.csv``, ``contexts.csv``, ``candidates.csv``)."""

    root: Path

    @classmethod
    def open(cls, root: str | Path | None = None) -> IssMini:
        """The dataset in ``root``: the iss_mini folder itself or the data folder holding it (default:
        ``<EARTHLOC_SHARED>/data``). Raises :class:`InputError` when no iss_mini table is there."""
        base = Path(root) if root is not None else data_dir()
        folder = base if any((base / f).is_file() for f in (QUERIES_CSV, CONTEXTS_CSV, CANDIDATES_CSV)) \
            else base / FOLDER
        if not any((folder / f).is_file() for f in (QUERIES_CSV, CONTEXTS_CSV, CANDIDATES_CSV)):
            raise InputError(folder, "not an iss_mini folder (no queries.csv, contexts.csv or candidates.csv; "
                                     "set EARTHLOC_SHARED to the folder holding data/iss_mini)")
        return cls(folder)

    @property
    def queries_csv(self) -> Path:
        """The photos' metadata table."""
        return self.root / QUERIES_CSV

    @property
    def candidates_csv(self) -> Path:
        """The worldwide search's candidate lists."""
        return self.root / CANDIDATES_CSV

    @property
    def contexts_csv(self) -> Path:
        """The context images' table."""
        return self.root / CONTEXTS_CSV

    def photos(self) -> list[Photo]:
        """The photos of ``queries.csv`` in file order; ``path`` set where ``queries/<mrf>.jpg`` exists."""
        return load_photos(self.queries_csv, self.root / QUERIES_DIR)

    def contexts(self) -> list[ContextRecord]:
        """The context images of ``contexts.csv``, in file order."""
        return read_contexts(self.contexts_csv)

    def candidates(self) -> list[CandidateRecord]:
        """The candidate rows of ``candidates.csv``, in file order."""
        return read_candidates(self.candidates_csv)

    def source(self) -> MosaicSource:
        """A tile source over every context image (year 2018)."""
        return MosaicSource([c.mosaic for c in self.contexts()])

    def localizations(self) -> list[Localization]:
        """One :class:`Localization` per photo whose image exists, its candidates with known bounds in rank
        order (photos left with none are dropped), sorted by mrf. Candidate ``score`` is ``-rank`` (the
        list stores ranks, not similarities); ``path`` is the context file (relative to ``root``) or None."""
        photos = {p.mrf: p for p in self.photos() if p.path is not None}
        by_mrf: dict[str, list[CandidateRecord]] = {}
        for c in self.candidates():
            if c.bounds_known and c.mrf in photos:
                by_mrf.setdefault(c.mrf, []).append(c)
        return [Localization(photos[mrf], tuple(_candidate(c) for c in sorted(rows, key=lambda c: c.rank)))
                for mrf, rows in sorted(by_mrf.items())]


def _candidate(c: CandidateRecord) -> Candidate:
    """A scored :class:`Candidate` (score ``-rank``) for a candidates-table row whose bounds are known."""
    if c.tile is None or c.rotation_deg is None:
        raise InputError(f"candidate {c.mrf} rank {c.rank}", "retrieval_rotation_deg is empty")
    return Candidate(c.tile, YEAR, c.rotation_deg, -float(c.rank), Footprint.from_bounds(*c.tile.bounds),
                     c.context_file)

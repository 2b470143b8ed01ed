"""The iss_mini benchmark as Localizations: each photo with its worldwide EarthLoc candidates.

``iss_mini/candidates.csv`` lists, per EarthMatch photo, the 10 candidates of a worldwide search with
their retrieval rotations (4x4-tile blocks, S2 cloudless 2018). Candidates with unknown bounds (the
three image-matching-models PNGs) are dropped; photos left with no candidate are dropped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from earthloc.errors import InputError
from earthloc.geo.footprint import Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.photos import load_photos
from earthloc.records import Candidate, Localization


def load_iss_mini(iss_mini_dir: Path) -> list[Localization]:
    """One :class:`Localization` per photo present in ``iss_mini/queries``, candidates in retrieval order.

    Candidate ``score`` is ``-rank`` (the list stores ranks, not similarities); ``path`` is the
    context file relative to ``iss_mini_dir`` when there is one.
    """
    root = Path(iss_mini_dir)
    table = root / "candidates.csv"
    if not table.is_file():
        raise InputError(table, "no candidates.csv here (expected an iss_mini folder)")
    photos = {p.mrf: p for p in load_photos(root / "queries.csv", root / "queries") if p.path is not None}
    df = pd.read_csv(table, dtype={"candidate_tile": str, "context_file": str}, keep_default_na=False)
    df = df[(df["bounds_known"].astype(str) == "1") & df["mrf"].isin(photos)]
    locs = []
    for mrf, rows in df.groupby("mrf", sort=True):
        cands = []
        for r in rows.sort_values("rank").itertuples(index=False):
            tile = TileBlock(int(r.zoom), int(r.tile_row), int(r.tile_col), 4)
            cands.append(Candidate(tile, 2018, int(r.retrieval_rotation_deg), -float(r.rank),
                                   Footprint.from_bounds(*tile.bounds), r.context_file or None))
        locs.append(Localization(photos[mrf], tuple(cands)))
    return locs

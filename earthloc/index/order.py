"""Geographic row order of an index: rows sorted into geo cells, so a visible disk is a few dozen
contiguous runs of rows (read as views, no copy)."""

from __future__ import annotations

import numpy as np


def geo_order(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Permutation sorting places into geo cells: 1-degree latitude bands, then longitude.

    A visible disk then intersects each band in one longitude interval, i.e. one contiguous run.
    """
    band = np.floor(np.asarray(lat, dtype=np.float64))
    return np.lexsort((np.asarray(lon, dtype=np.float64), band))


def runs(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` intervals of consecutive True values in a 1-D bool array; runs
    separated by at most ``max_gap`` False values are joined (the gap rows are then inside)."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        if runs and a - runs[-1][1] <= max_gap:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs

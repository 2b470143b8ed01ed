"""Baselines for the real-photo benchmark: ranked place lists that need no learned descriptor, and
the lists of a descriptor model through the application layer :mod:`earthloc.pipeline` (what users run).

* random choice: places in a seeded random order; its *expected* recall is exact and closed-form
  (:func:`expected_random_curve`), which is what the report shows;
* nadir: places sorted by great-circle distance from the ISS nadir to their centre (the photo is
  somewhere in view of the ISS, so the nearest places are a fair guess without looking at pixels);
* a model: ``lite0-gem`` is the ImageNet zero-shot baseline (EfficientNet-Lite0 + GeM, no training);
  trained or official checkpoints are scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from earthloc import pipeline
from earthloc.geo.footprint import haversine_km
from earthloc.geo.tiles import TileBlock
from earthloc.records import Photo


def places(db_frame: pd.DataFrame) -> pd.DataFrame:
    """One row per DB place (a tile in several years counts once), in manifest order."""
    return db_frame.drop_duplicates("tile").reset_index(drop=True)


def _blocks(frame: pd.DataFrame, rows: np.ndarray) -> list[TileBlock]:
    return [TileBlock(int(z), int(r), int(c)) for z, r, c in frame[["zoom", "row", "col"]].to_numpy()[rows]]


def random_lists(photos: Sequence[Photo], db_frame: pd.DataFrame, k: int = 100, seed: int = 0) -> list[list[TileBlock]]:
    """A seeded uniformly random ranking of the DB places for each photo (first ``k``)."""
    frame = places(db_frame)
    rng = np.random.default_rng(seed)
    return [_blocks(frame, rng.permutation(len(frame))[:k]) for _ in photos]


def expected_random_curve(n_positives: Sequence[int], n_places: int, depth: int = 100) -> np.ndarray:
    """Exact expected R@n (percent, n = 1..depth) of a uniformly random ranking of ``n_places`` places,
    for photos with ``n_positives[i]`` positive places each.

    P(no positive in the first n) = C(M-p, n) / C(M, n) = prod_{i<n} (M-p-i)/(M-i).
    """
    m = int(n_places)
    curve = np.zeros(depth)
    if len(n_positives) == 0 or m == 0:
        return curve
    n = np.arange(depth)
    for p in n_positives:
        ratio = np.clip((m - p - n) / (m - n).clip(min=1), 0.0, 1.0)
        curve += 1.0 - np.cumprod(ratio)
    return 100.0 * curve / len(n_positives)


def nadir_lists(photos: Sequence[Photo], db_frame: pd.DataFrame, k: int = 100) -> list[list[TileBlock] | None]:
    """DB places sorted by haversine distance from the photo's ISS nadir to the place centre (None: no nadir).

    Ties (same distance) keep manifest order, so the ranking is deterministic.
    """
    frame = places(db_frame)
    lat, lon = frame["centre_lat"].to_numpy(), frame["centre_lon"].to_numpy()
    out: list[list[TileBlock] | None] = []
    for photo in photos:
        if photo.nadir is None:
            out.append(None)
            continue
        d = haversine_km(photo.nadir[0], photo.nadir[1], lat, lon)
        out.append(_blocks(frame, np.argsort(d, kind="stable")[:k]))
    return out


def model_lists(locator, photos: Sequence[Photo], k: int = 100):
    """Ranked places from a :class:`earthloc.locate.Locator`, each photo prepared and encoded once by the
    pipeline's stages and ranked twice: in its visible disk (what ``earthloc locate`` does) and over the
    whole DB (nadir withheld). Photos go ``locator.encoder.batch_size`` per batch.

    Returns ``(visible_lists, global_lists, errors)``: lists are None where the photo failed (unreadable
    image...), ``errors`` maps those mrfs to the message.
    """
    visible: list[list[TileBlock] | None] = [None] * len(photos)
    whole: list[list[TileBlock] | None] = [None] * len(photos)
    errors: dict[str, str] = {}
    ok: list[tuple[int, pipeline.Prepared]] = []
    for i, photo in enumerate(photos):
        try:
            ok.append((i, pipeline.prepare(locator, photo)))
        except pipeline.PER_PHOTO_ERRORS as err:
            errors[photo.mrf] = str(err)
    size = locator.encoder.batch_size
    batches = [ok[a:a + size] for a in range(0, len(ok), size)]
    options = pipeline.LocateOptions(top_k=k)
    for batch, desc in zip(batches, pipeline.encode(locator, [[p for _, p in b] for b in batches])):
        for (i, prep), d in zip(batch, desc):
            visible[i] = [c.tile for c in pipeline.search(locator, prep, d, options).candidates]
            glob = pipeline.Prepared(replace(prep.photo, nadir=None), prep.image)
            whole[i] = [c.tile for c in pipeline.search(locator, glob, d, options).candidates]
    return visible, whole, errors

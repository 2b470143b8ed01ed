"""The offline end-to-end demo on ``../shared/data/iss_mini`` (``make demo`` = ``earthloc demo``).

1. DB: every 4x4 place (stride 2) that a context image covers at its own zoom, cut from the 190
   georeferenced Sentinel-2 cloudless 2018 contexts (:class:`earthloc.sources.mosaic.MosaicSource`),
   1024-px JPEGs in the official layout. Own zoom only: no place is upsampled from a coarser context.
   Places that no photo's visible disk reaches are left out: no search could return them, and
   encoding them is the slowest step.
2. Index: the offline model ``lite0-gem`` (ImageNet EfficientNet-Lite0 + GeM, no training), 1x index,
   photos encoded at 0/90/180/270 degrees.
3. Locate the real ISS photos of ``queries.csv`` with their NASA nadir: only DB images whose centre
   lies in the photo's visible disk are searched.
4. Print a table (photo, true centre, best candidate, distance, hit) with the chance level, write
   JSON lines / GeoJSON / CSV / KML and an HTML map.

Every step resumes: the DB build skips finished images, the index build reuses finished chunks and a
finished index, localization skips the photos already in ``localizations.jsonl``.
A hit means the NASA centre point lies inside the best candidate's footprint (a Web-Mercator tile
block, i.e. a latitude/longitude box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from earthloc import outputs
from earthloc.db.build import build_db
from earthloc.db.grid import places_covered
from earthloc.errors import InputError
from earthloc.geo.footprint import haversine_km
from earthloc.geo.tiles import TileBlock
from earthloc.geo.visibility import in_visible_disk
from earthloc.index.store import Index
from earthloc.locate import Locator
from earthloc.models.registry import load_model
from earthloc.pipeline import LocateOptions, localize
from earthloc.records import Localization
from earthloc.refine.features import build_store
from earthloc.sources import iss_mini
from earthloc.sources.iss_mini import IssMini
from earthloc.sources.mosaic import MosaicSource

MODEL = "lite0-gem"
YEAR = iss_mini.YEAR  # the contexts are s2cloudless-2018


@dataclass(frozen=True)
class PhotoResult:
    """One row of the demo table."""

    mrf: str
    true_centre: tuple[float, float] | None
    best: str | None  # tile name of the best candidate
    rotation_deg: int | None
    distance_km: float | None  # true centre to the best candidate's centre
    hit: bool
    first_hit_rank: int | None  # rank (1-based) of the first candidate containing the true centre
    searched: int  # DB images in the visible disk
    positives: int  # of those, how many contain the true centre
    error: str | None
    verified: bool | None = None  # the calibrated verification vouches for the answer
    confidence: float | None = None  # P(refined footprint holds the true centre)
    refined_km: float | None = None  # true centre to the refined footprint's centre

    @property
    def chance(self) -> float:
        """Probability that a uniformly random pick among the searched DB images is a hit."""
        return self.positives / self.searched if self.searched else 0.0


@dataclass(frozen=True)
class DemoReport:
    """The demo's rows, the DB size and where the outputs went."""

    rows: tuple[PhotoResult, ...]
    n_db: int
    out_dir: Path

    @property
    def ok(self) -> list[PhotoResult]:
        """The rows of photos that were localized (no error)."""
        return [r for r in self.rows if r.error is None]

    def hits_at(self, k: int) -> int:
        """Photos whose first candidate holding the true centre is within the top ``k``."""
        return sum(1 for r in self.ok if r.first_hit_rank is not None and r.first_hit_rank <= k)


def demo_places(source, mosaics: Sequence | None = None) -> list[TileBlock]:
    """4x4 places (stride 2) fully inside some context at that context's own zoom."""
    found: set[TileBlock] = set()
    for m in mosaics if mosaics is not None else source.mosaics:
        found |= set(places_covered(MosaicSource([m]), zooms=[m.zoom], years=[m.year]))
    return sorted(found)


def visible_places(places: Sequence[TileBlock], photos: Sequence) -> list[TileBlock]:
    """The places whose centre lies in the visible disk of at least one photo: the only DB images a
    search for these photos can ever touch (the others would be built and encoded for nothing)."""
    lat = np.array([b.lonlat_box_centre[0] for b in places])
    lon = np.array([b.lonlat_box_centre[1] for b in places])
    keep = np.zeros(len(places), dtype=bool)
    for p in photos:
        if p.nadir is not None:  # a photo without nadir would keep everything: it cannot be searched anyway
            keep |= in_visible_disk(p.nadir, p.altitude_km, lat, lon)
    return [b for b, k in zip(places, keep) if k]


def _in_box(lat: float, lon: float, tiles: Sequence[str]) -> np.ndarray:
    """Whether (lat, lon) lies in each named 4x4 tile block (a lat/lon box: exact for tile blocks)."""
    out = np.zeros(len(tiles), dtype=bool)
    for i, name in enumerate(tiles):
        w, s, e, n = TileBlock.from_name(name).bounds
        out[i] = s <= lat <= n and w <= lon <= e
    return out


def build_or_open_index(db_dir: Path, index_dir: Path, model, progress: bool = True):
    """The demo index: reused when it matches the model and the DB, else (re)built. Returns (index, rebuilt)."""
    if (index_dir / "index.json").is_file():
        try:
            return Index.open(index_dir, model=model, db_dir=db_dir), False
        except InputError:
            pass  # stale: rebuild below
    return Index.build(db_dir, model, index_dir, rotations="query", precision="fp32", progress=progress), True


def score(loc: Localization, locator) -> PhotoResult:
    """Table row of one localization against its ground-truth centre."""
    p = loc.photo
    if loc.error or not p.centre:
        return PhotoResult(p.mrf, p.centre, None, None, None, False, None, 0, 0, loc.error or "no true centre")
    lat, lon = p.centre
    hits = _in_box(lat, lon, [c.tile.name for c in loc.candidates])
    mask = locator.visible_mask(p)
    tiles = locator.index.manifest["tile"].to_numpy()
    searched = tiles[mask] if mask is not None else tiles
    best = loc.candidates[0] if loc.candidates else None
    dist = float(haversine_km(lat, lon, *best.tile.centre)) if best else None
    first = int(np.argmax(hits)) + 1 if hits.any() else None
    fp = loc.refined_footprint
    refined_km = float(haversine_km(lat, lon, *fp.centroid)) if fp is not None else None
    return PhotoResult(p.mrf, p.centre, best.tile.name if best else None, best.rotation_deg if best else None,
                       dist, bool(hits[0]) if len(hits) else False, first, len(searched),
                       int(_in_box(lat, lon, list(searched)).sum()), None, loc.verified, loc.confidence, refined_km)


def run_demo(out_dir: Path = Path("out/demo"), shared: Path | None = None, mrfs: Sequence[str] | None = None,
             top_k: int = 10, workers: int = 2, progress: bool = True, verify: bool = True) -> DemoReport:
    """Run the whole demo (resumable). ``mrfs``: only these photos, and only the contexts of their
    retrieval candidates in the DB (a reduced demo, for tests). ``verify``: verify the top 50 candidates,
    re-rank, refine the answer (:mod:`earthloc.refine.verify`; the DB images' features are stored
    beside the index once)."""
    iss = IssMini.open(shared)
    out_dir = Path(out_dir)
    source = iss.source()
    photos = iss.photos()
    mosaics = None
    if mrfs is not None:
        photos = [p for p in photos if p.mrf in set(mrfs)]
        files = {iss.root / c.context_file for c in iss.candidates() if c.mrf in set(mrfs) and c.context_file}
        mosaics = [m for m in source.mosaics if m.path in files]
    covered = demo_places(source, mosaics)
    places = visible_places(covered, photos)
    say = print if progress else (lambda *a, **k: None)
    say(f"[1/4] DB: {len(places)} places x {YEAR} ({len(covered)} covered by {len(mosaics or source.mosaics)} "
        f"context images, of which {len(places)} visible from some photo's nadir) -> {out_dir / 'db'}")
    build_db(source, places, [YEAR], out_dir / "db", workers=workers, progress=progress)
    say(f"[2/4] index: {MODEL}, 1x, photos at 0/90/180/270 deg -> {out_dir / 'index'}")
    model = load_model(MODEL)
    index, rebuilt = build_or_open_index(out_dir / "db", out_dir / "index", model, progress)
    if verify:
        build_store(out_dir / "index", (out_dir / "db").resolve(), progress=progress)
    progress_file = out_dir / "localizations.jsonl"
    if rebuilt:
        progress_file.unlink(missing_ok=True)  # results of another index are stale
    say(f"[3/4] locating {len(photos)} ISS photos (visible disk from the NASA nadir)")
    locator = Locator(index, model)
    locs = localize(locator, photos, LocateOptions(top_k=top_k, verify=verify), progress_file, progress=progress)
    say(f"[4/4] outputs -> {out_dir}")
    for name in ("localizations.geojson", "localizations.csv", "localizations.kml", "map.html"):
        outputs.write(locs, out_dir / name)
    return DemoReport(tuple(score(loc, locator) for loc in locs), len(index), out_dir)


def print_report(report: DemoReport) -> None:
    """The demo table and summary, on the terminal."""

    t = Table(title=f"earthloc demo: {len(report.rows)} ISS photos vs {report.n_db} DB images ({MODEL}, zero-shot)")
    cols = ("photo", "true centre", "best candidate", "rot", "distance km", "rank-1 hit", "first hit", "verified",
            "confidence", "refined km", "searched", "chance")
    for col in cols:
        t.add_column(col, justify="left" if col in ("photo", "best candidate") else "right",
                     no_wrap=col in ("photo", "best candidate"))
    for r in report.rows:
        if r.error or r.true_centre is None:  # score() sets error where the true centre is unknown
            t.add_row(r.mrf, "", f"error: {r.error}", *[""] * (len(cols) - 3))
            continue
        t.add_row(r.mrf, f"{r.true_centre[0]:.2f}, {r.true_centre[1]:.2f}", r.best or "-", str(r.rotation_deg),
                  f"{r.distance_km:.0f}", "yes" if r.hit else "no", str(r.first_hit_rank or "-"),
                  {True: "yes", False: "no", None: "-"}[r.verified],
                  "-" if r.confidence is None else f"{r.confidence:.2f}",
                  "-" if r.refined_km is None else f"{r.refined_km:.1f}", str(r.searched), f"{100 * r.chance:.1f}%")
    console = Console(width=170)
    console.print(t)
    ok = report.ok
    n = len(ok)
    chance = sum(r.chance for r in ok)
    dists = [r.distance_km for r in ok if r.distance_km is not None]
    console.print(f"hits (true centre in best candidate): {report.hits_at(1)}/{n}; in top 5: {report.hits_at(5)}/{n}; "
                  f"in top 10: {report.hits_at(10)}/{n}; a random pick inside the visible disk would hit "
                  f"{chance:.1f}/{n} on average; median distance {np.median(dists) if dists else float('nan'):.0f} km; "
                  f"failed photos: {len(report.rows) - n}")
    conf = [r for r in ok if r.verified]
    if any(r.verified is not None for r in ok):
        console.print(f"verified (calibrated confidence over the threshold): {len(conf)}/{n}, of which "
                      f"{sum(r.hit for r in conf)} hit; refined footprint within 10 km of NASA's centre: "
                      f"{sum(1 for r in ok if r.refined_km is not None and r.refined_km <= 10)}/{n}")
    console.print(f"map: {report.out_dir / 'map.html'} (GeoJSON/KML/CSV beside it)")

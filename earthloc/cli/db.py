"""``earthloc db ...``: build, verify and plan EarthLoc databases (thin over earthloc.db / earthloc.sources)."""

from __future__ import annotations

from pathlib import Path

import typer

db_app = typer.Typer(help="Build, verify and plan EarthLoc databases (official layout + manifest.parquet).",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.add_typer(db_app, name="db")


def _ints(text: str | None, what: str) -> list[int] | None:
    from earthloc.errors import InputError

    if text is None or not text.strip():
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise InputError(what, f"expected comma-separated integers, got {text!r}") from err


def _read_places(path: Path) -> list:
    from earthloc.errors import InputError
    from earthloc.geo.tiles import TileBlock

    if not path.is_file():
        raise InputError(path, "places file not found")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [TileBlock.from_name(n) for n in names]


@db_app.command("build")
def build(
    source: str = typer.Option(..., "--source", help="eox | wmts:URL | raster:YEAR=PATH,... | iss-mini[:DIR] | "
                                                     "official:DIR | stac:URL (wmts URL takes {z} {x} {y} "
                                                     "{year}; stac: cloudless Sentinel-2 medians)."),
    out: Path = typer.Option(..., "--out", help="DB folder to write (resumes if it exists)."),
    region: str = typer.Option(None, "--region", help="world | bbox:W,S,E,N | circle:LAT,LON,KM | alps|texas|"
                                                      "toshka|amazon|napa|gobi[:KM]. Default for local sources: "
                                                      "all they cover."),
    zooms: str = typer.Option(None, "--zooms", help="Comma-separated zooms [default 9,10,11 for tile services; "
                                                    "the source's own zooms for local sources]."),
    years: str = typer.Option(None, "--years", help="Comma-separated years [default: all the source serves]."),
    places_file: Path = typer.Option(None, "--places", help="Text file of place names ZZ_RRRR_CCCC, one per "
                                                            "line (instead of --region)."),
    land: bool = typer.Option(True, "--land/--no-land", help="Keep land places only (grid of tile services)."),
    max_abs_lat: float = typer.Option(60.0, "--max-abs-lat", min=0, max=85.0511, help="Latitude limit of the grid, degrees."),
    workers: int = typer.Option(8, "--workers", min=1, help="Images composed in parallel."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="HTTP requests in flight at most."),
    rate: float = typer.Option(16.0, "--rate", min=0, help="Requests per second per host at most (0 = no limit)."),
    tile_cache: Path = typer.Option(None, "--tile-cache", help="Tile cache folder [default: "
                                                               "$EARTHLOC_CACHE/tiles]."),
    quality: int = typer.Option(90, "--quality", min=1, max=100, help="JPEG quality of the DB images."),
    size: int = typer.Option(1024, "--size", min=16, max=4096,
                             help="Pixels per side of the DB images (official: 1024 = 4 x 256-px tiles; smaller "
                                  "saves disk and decoding, same footprint)."),
    limit: int = typer.Option(0, "--limit", min=0, help="Build only the first N places (0 = all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print how many places and images."),
    collection: str = typer.Option("sentinel-2-l2a", "--collection", help="stac: the collection to composite."),
    season: str = typer.Option(None, "--season", help="stac: months FIRST-LAST within each year, e.g. 6-9 "
                                                      "(11-2 runs into the next year) [default: whole year]."),
    snow: bool = typer.Option(False, "--mask-snow/--keep-snow", help="stac: also mask snow/ice (SCL 11)."),
    min_clear: int = typer.Option(1, "--min-clear", help="stac: places with fewer clear observations (at 99% "
                                                         "of their pixels) are listed at the end."),
    skip_sparse: bool = typer.Option(False, "--skip-sparse", help="stac: leave those places out of the DB."),
    max_items: int = typer.Option(16, "--max-items", help="stac: least cloudy scenes read per place and year."),
    ray: str = typer.Option(None, "--ray", help="Make the images on Ray: local (start Ray here), auto (the cluster "
                                                "of `ray start`) or a cluster ADDRESS. --rate and --concurrency "
                                                "then hold for the whole cluster; --workers = images at once per "
                                                "task. Needs earthloc with the ray extra."),
    ray_batch: int = typer.Option(8, "--ray-batch", min=1, help="Neighbouring images per Ray task."),
) -> None:
    """Build DB images (1024-px JPEG mosaics of 4x4 tiles, official names and folders) and manifest.parquet.

    A place whose source permanently lacks a tile (HTTP 404, or a tile the service keeps failing on) is
    listed in OUT/missing.csv and the build goes on; the exit code is then 1 (a re-run tries them again).
    """
    from earthloc.db.build import build_db
    from earthloc.db.grid import Region, select_places
    from earthloc.errors import InputError
    from earthloc.sources.spec import open_source

    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; --out names the DB folder to write")
    year_list = _ints(years, "--years")
    if ray is not None:
        from earthloc.db.ray_build import default_tile_cache

        tile_cache = default_tile_cache(tile_cache)  # one absolute path for every worker
    stac = _stac_options(collection, season, snow, min_clear, skip_sparse, max_items)
    src = open_source(source, years=year_list, cache_dir=tile_cache, concurrency=concurrency,
                      rate_per_host=rate or None, stac=stac)
    if year_list and (bad := [y for y in year_list if y not in src.years]):
        raise InputError(f"years {bad}", f"not served by --source {source} (it has {list(src.years)})")
    year_list = year_list or list(src.years)
    if places_file is not None:
        if region is not None:
            raise InputError("--places", "give --places or --region, not both")
        chosen = _read_places(places_file)
    else:
        chosen = select_places(src, Region.parse(region) if region else None, _ints(zooms, "--zooms"), year_list,
                               max_abs_lat=max_abs_lat, land_only=land)
    if limit:
        chosen = chosen[:limit]
    zs = sorted({b.zoom for b in chosen})
    typer.echo(f"{len(chosen)} places at zooms {zs} x {len(year_list)} years = {len(chosen) * len(year_list)} images")
    if getattr(src, "attribution", ""):
        typer.echo(f"imagery: {src.attribution}")
    if dry_run:
        return
    if not chosen:
        raise InputError("--region", "selects no place for this source")
    if ray is not None:
        import functools

        from earthloc.db.ray_build import build_db_on_ray

        if hasattr(src, "close"):
            src.close()  # each Ray worker opens its own from the same recipe
        recipe = functools.partial(open_source, source, years=year_list, cache_dir=tile_cache,
                                   concurrency=concurrency, rate_per_host=rate or None, stac=stac)
        rep = build_db_on_ray(recipe, chosen, year_list, out, address=ray, quality=quality, size=size,
                              rate_per_host=rate or None, concurrency=concurrency, batch=ray_batch, threads=workers)
        extra = (f"; {rep.nodes} Ray nodes, {rep.requests} HTTP requests through the shared limit (at most "
                 f"{rep.peak_in_flight} in flight), {rep.resubmitted} batches run again")
        if rep.left_out:
            typer.echo(f"left out {len(rep.left_out)} images: " + "; ".join(rep.left_out[:20]))
    else:
        try:
            rep = build_db(src, chosen, year_list, out, workers=workers, quality=quality, size=size)
        finally:
            if hasattr(src, "close"):
                src.close()
        extra = ""
        if hasattr(src, "stats"):
            s = src.stats
            extra = (f"; {s['requests']} HTTP requests ({s['retries']} retries), {s['downloads']} tiles "
                     f"downloaded, {s['cache_hits']} from cache")
        if hasattr(src, "write_report"):
            _stac_summary(src, out, rep)
    typer.echo(f"wrote {rep.written}, kept {rep.skipped} already built, {rep.images} images in {rep.seconds:.1f} s "
               f"({rep.images_per_s:.1f} img/s){extra} -> {rep.manifest}")
    if rep.missing:
        for m in rep.missing[:20]:
            typer.echo(f"MISSING {m.path}: {m.reason}", err=True)
        more = f" ({len(rep.missing) - 20} more)" if len(rep.missing) > 20 else ""
        typer.echo(f"{len(rep.missing)} images not built, a tile is missing{more}: listed in "
                   f"{rep.out_dir / 'missing.csv'}; a re-run tries them again", err=True)
        raise typer.Exit(1)


def _stac_options(collection: str, season: str | None, snow: bool, min_clear: int, skip_sparse: bool,
                  max_items: int) -> dict:
    from earthloc.errors import InputError

    months = None
    if season:
        first, dash, last = season.partition("-")
        if not (dash and first.strip().isdigit() and last.strip().isdigit()):
            raise InputError("--season", f"expected FIRST-LAST months like 6-9, got {season!r}")
        months = (int(first), int(last))
    return {"collection": collection, "season": months, "mask_snow": snow, "min_clear": min_clear,
            "skip_sparse": skip_sparse, "max_items": max_items}


def _stac_summary(src, out: Path, rep) -> None:
    """Coverage and budget of a STAC build: sparse places listed, per-place requests/bytes, CSV report."""
    s = src.totals
    path = src.write_report(out / "stac_report.csv")
    for r in s["sparse"]:
        what = "left out" if r.skipped else f"written, {r.empty_share:.0%} of pixels black (no clear observation)"
        typer.echo(f"sparse: {r.place} {r.year}: {r.clear_obs} clear observations < --min-clear {src.min_clear} "
                   f"({r.items} scenes); {what}")
    if s["places"]:
        typer.echo(f"stac: {s['places']} composites, {s['requests']} requests ({s['retries']} retries), "
                   f"{s['bytes'] / 1e6:.1f} MB; per place {s['requests'] / s['places']:.0f} requests, "
                   f"{s['bytes'] / s['places'] / 1e6:.2f} MB; {len(s['sparse'])} sparse -> {path}")
    if rep.left_out:
        typer.echo(f"left out {len(rep.left_out)} images (see above)")


@db_app.command("verify")
def verify(
    db: Path = typer.Argument(..., help="DB folder (official layout, with or without manifest.parquet)."),
    workers: int = typer.Option(4, "--workers", min=1, help="Images checked in parallel."),
) -> None:
    """Decode every DB image and check it against the manifest; exit 0 only when all are good (else 1)."""
    from earthloc.db.integrity import verify_db

    rep = verify_db(db, workers=workers)
    for path, problem in rep.problems[:50]:
        typer.echo(f"BAD {path}: {problem}", err=True)
    if len(rep.problems) > 50:
        typer.echo(f"... and {len(rep.problems) - 50} more problems", err=True)
    how = "decoded and checksummed" if rep.checksums else "decoded (no manifest: names only, no checksums)"
    typer.echo(f"{rep.checked} images {how}: {len(rep.problems)} problems")
    raise typer.Exit(0 if rep.ok else 1)


@db_app.command("grid")
def grid(
    zooms: str = typer.Option("9,10,11", "--zooms", help="Comma-separated zooms."),
    region: str = typer.Option("world", "--region", help="world | bbox:W,S,E,N | circle:LAT,LON,KM | area[:KM]."),
    max_abs_lat: float = typer.Option(60.0, "--max-abs-lat", min=0, max=85.0511, help="Latitude limit, degrees."),
    min_land: float = typer.Option(None, "--min-land", min=0, max=1, help="Share of land samples a place needs "
                                                            "[default 1/256: any land]."),
    land: bool = typer.Option(True, "--land/--no-land", help="Apply the land mask."),
    out: Path = typer.Option(None, "--out", help="Write the place names (ZZ_RRRR_CCCC) to this file."),
) -> None:
    """Count (and optionally list) the DB places of the grid; compares the world count with the official 161,496."""
    from earthloc.atomic import write_text
    from earthloc.db.grid import DEFAULT_ZOOMS, MIN_LAND, OFFICIAL_PLACES, Region, places

    reg = Region.parse(region)
    zs = _ints(zooms, "--zooms")
    found = places(DEFAULT_ZOOMS if zs is None else zs, reg, max_abs_lat, land, MIN_LAND if min_land is None else min_land)
    for z in sorted({b.zoom for b in found}):
        typer.echo(f"zoom {z}: {sum(b.zoom == z for b in found)} places")
    line = f"total: {len(found)} places"
    if reg.kind == "world":
        line += f" ({len(found) / OFFICIAL_PLACES:.3f} x the official {OFFICIAL_PLACES:,})"
    typer.echo(line)
    if out is not None:
        write_text(out, "".join(b.name + "\n" for b in found))

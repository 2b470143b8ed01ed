"""``earthloc locate``: rank DB tiles for one photo or a batch (folder / CSV), write GIS outputs.

Exit codes: 0 every photo localized, 1 some photos failed (their rows carry the error), 2 bad input
(missing index, bad option, unreadable CSV...: one ``error:`` line, nothing written).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer

from earthloc.atomic import STDOUT, check_writable, is_stream
from earthloc.errors import InputError


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.command("locate")(locate)


def _parse_nadir(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--nadir", f"expected LAT,LON in degrees, got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InputError("--nadir", f"{lat},{lon} is not a valid LAT,LON")
    return lat, lon


ALTITUDE_RANGE_KM = (150.0, 1000.0)  # the ISS has flown at 330..440 km; outside this range is a typo


def _parse_time(text: str) -> datetime:
    from earthloc.photos import parse_utc

    return parse_utc(text, "--time")


def locate(
    photos: list[Path] = typer.Argument(None, help="Photos: image files, folders of images, or CSVs of photos."),
    index: Path = typer.Option(..., "--index", help="Index folder (`earthloc index build`)."),
    nadir: str = typer.Option(None, "--nadir", help="ISS nadir LAT,LON (degrees) for every photo given."),
    time: str = typer.Option(None, "--time", help="UTC exposure time (ISO 8601): ISS position from the TLE history."),
    altitude: float = typer.Option(None, "--altitude", help="ISS altitude in km (default: from TLE or ~415 km)."),
    metadata: Path = typer.Option(None, "--metadata", help="CSV with nadir/time per photo (matched by MRF = file stem)."),
    images: Path = typer.Option(None, "--images", help="Folder of <MRF>.jpg for photos listed in a CSV."),
    top: int = typer.Option(10, "--top", min=1, help="Candidates per photo."),
    fmt: str = typer.Option(None, "--format", help="json, jsonl, geojson, csv or kml (default: from --out, else json)."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default or -: standard output)."),
    html_map: Path = typer.Option(None, "--map", help="Also write an HTML map (Leaflet) of footprints and nadirs."),
    progress_file: Path = typer.Option(None, "--progress",
                                       help="Resumable progress file (JSON lines; default <out>.progress.jsonl with --out)."),
    search_all: bool = typer.Option(False, "--global", help="Photos without nadir/time: search the whole index."),
    max_off_nadir: float = typer.Option(None, "--max-off-nadir",
                                        help="Search only what a camera sees up to this many degrees off nadir."),
    model: str = typer.Option(None, "--model", help="Model name (default: the index's model)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file for the model."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Verify the top candidates by local features at 4 rotations, re-rank, refine "
                                     "the answer, calibrated confidence (needs the index's DB images)."),
    verify_top: int = typer.Option(50, "--verify-top", min=1, help="Candidates verified per photo."),
    refine: bool = typer.Option(False, "--refine", help="Instead of verification: refine every candidate into a "
                                                        "footprint (earthloc refine) and re-rank (slow)."),
    matcher: str = typer.Option("xfeat-lg", "--matcher", help="Matcher for --refine: xfeat-lg, disk-lg, aliked-lg, sift, orb."),
    device: str = typer.Option("cpu", "--device", help="Where to encode photos: cpu, cuda, cuda:N or auto (GPU if any)."),
    ray: str = typer.Option(None, "--ray", help="Encode photos on Ray workers: 'local', 'auto' (the running cluster) "
                                                "or a cluster address; search and outputs stay here. Needs earthloc[ray]."),
    ray_cpus: int = typer.Option(1, "--ray-cpus", min=1, help="CPUs (torch threads) per Ray task."),
) -> int:
    """Rank DB tiles (tile, year, rotation, score, footprint) for each photo, searching only the DB
    images visible from the ISS. Exit code 0: all photos localized; 1: some failed; 2: bad input."""
    from functools import partial

    from earthloc import outputs
    from earthloc.models.encoders import LocalEncoder, RayEncoder
    from earthloc.models.fast import resolve_device
    from earthloc.pipeline import LocateOptions, gather_photos, localize, open_locator

    if out is not None and str(out) == STDOUT:
        out = None
    if progress_file is None and out is not None and not is_stream(out):  # no side file beside /dev/null
        progress_file = out.with_name(out.name + ".progress.jsonl")
    for path in (out, html_map, progress_file):
        if path is not None:
            check_writable(path)  # before any work: a bad output path is bad input
    fmt = fmt or (outputs.format_of(out) if out and not is_stream(out) else "json")
    if fmt not in outputs.FORMATS or fmt == "html":
        raise InputError("--format", f"must be one of json, jsonl, geojson, csv, kml; got {fmt!r}")
    nadir_ll = _parse_nadir(nadir) if nadir else None
    when = _parse_time(time) if time else None
    if nadir_ll and when:
        from earthloc.geo.visibility import check_nadir_time

        check_nadir_time(nadir_ll, when, "--nadir and --time")
    if altitude is not None and not ALTITUDE_RANGE_KM[0] <= altitude <= ALTITUDE_RANGE_KM[1]:
        lo, hi = ALTITUDE_RANGE_KM
        raise InputError("--altitude", f"{altitude:g} km is not an ISS altitude ({lo:.0f}..{hi:.0f} km)")
    items = gather_photos(list(photos or []), metadata, images, nadir=nadir_ll, time=when, altitude_km=altitude)
    device = resolve_device(device)  # a missing GPU is bad input, before the index is read
    encoder = partial(RayEncoder, address=ray, cpus=ray_cpus, device=device) if ray else partial(LocalEncoder, device=device)
    locator = open_locator(index, model, checkpoint, encoder=encoder, max_off_nadir_deg=max_off_nadir,
                           require_area=not search_all)
    options = LocateOptions(top_k=top, refine=refine, matcher=matcher, verify=verify and not refine,
                            verify_top_k=verify_top)
    results = localize(locator, items, options, progress_file,
                       progress=len(items) > 1)
    if out is None:
        sys.stdout.write(outputs.render(results, fmt))
    else:
        outputs.write(results, out, fmt)
    if html_map is not None:
        outputs.write_html_map(results, html_map)
    failed = [r for r in results if r.error]
    for r in failed:
        typer.echo(f"failed: {r.error}", err=True)  # the error names the photo
    if out is not None:
        typer.echo(f"{len(results) - len(failed)}/{len(results)} photos localized -> {out}", err=True)
    return 1 if failed else 0

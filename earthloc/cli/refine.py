"""``earthloc refine ...``: footprint refinement runs on iss_mini, calibration and the results report."""

from __future__ import annotations

from pathlib import Path

import typer

from earthloc.errors import InputError

refine_app = typer.Typer(help="Refine candidates into footprints (local features + homography): run, calibrate, report.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.add_typer(refine_app, name="refine")


def _iss_mini(data: Path | None):
    """The iss_mini dataset of ``--data`` (an iss_mini folder; default: the shared one), with its candidates table."""
    from earthloc.sources.iss_mini import IssMini

    iss = IssMini.open(data)
    if not iss.candidates_csv.is_file():
        raise InputError(iss.root, "not an iss_mini folder (no candidates.csv)")
    return iss


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


@refine_app.command("run")
def run_cmd(
    out: Path = typer.Option(..., "--out", help="Run file (JSON lines, one per photo; an existing file is resumed)."),
    matcher: str = typer.Option("xfeat-lg", "--matcher", help="xfeat-lg, disk-lg, aliked-lg, sift or orb."),
    data: Path = typer.Option(None, "--data", help="iss_mini folder (default: $EARTHLOC_SHARED/data/iss_mini)."),
    iterations: int = typer.Option(4, "--iterations", min=1, max=10, help="Homography iterations per candidate."),
    photos: str = typer.Option(None, "--photos", help="Comma-separated MRFs (default: every photo with candidates)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N photos (by MRF)."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads."),
) -> None:
    """Refine every candidate of the iss_mini photos (worldwide EarthLoc lists) and store the outcome."""
    from rich.progress import track

    from earthloc.refine.context import IssMiniContexts
    from earthloc.refine.evaluate import run
    from earthloc.refine.matchers import load_matcher

    _threads(threads)
    iss = _iss_mini(data)
    locs = iss.localizations()
    if photos:
        wanted = set(photos.split(","))
        missing = wanted - {l.photo.mrf for l in locs}
        if missing:
            raise InputError("--photos", f"not in iss_mini: {', '.join(sorted(missing))}")
        locs = [l for l in locs if l.photo.mrf in wanted]
    locs = locs[:limit] if limit else locs
    m = load_matcher(matcher)
    recs = run(locs, IssMiniContexts(iss.root), m, out, iterations=iterations,
               progress=lambda xs: track(xs, description=f"refine {matcher}"))
    typer.echo(f"{len(recs)} photos in {out}", err=True)


def _outcomes(runs: list[Path], data: Path | None):
    from earthloc.refine.evaluate import outcomes, read_run

    locs = _iss_mini(data).localizations()
    res = {}
    for path in runs:
        if not path.is_file():
            raise InputError(path, "no such run file (make one with `earthloc refine run`)")
        recs = read_run(path)
        if not recs:
            raise InputError(path, "empty run file")
        res[path] = (recs[0]["matcher"], outcomes(recs, locs, nadir_filter))
    return res


def nadir_filter(loc) -> list[bool]:
    """Per candidate: is its centre inside the disk visible from the ISS at the photo's nadir?"""
    from earthloc.geo.visibility import in_visible_disk

    lats = [c.tile.centre[0] for c in loc.candidates]
    lons = [c.tile.centre[1] for c in loc.candidates]
    return in_visible_disk(loc.photo.nadir, loc.photo.altitude_km, lats, lons).tolist()


def _figure(run_file: Path, mrf: str, out: Path, data: Path | None) -> None:
    from earthloc.refine.context import IssMiniContexts
    from earthloc.refine.evaluate import read_run
    from earthloc.refine.run_report import figure

    iss = _iss_mini(data)
    rec = next((r for r in read_run(run_file) if r["mrf"] == mrf), None)
    loc = next((l for l in iss.localizations() if l.photo.mrf == mrf), None)
    if rec is None or loc is None:
        raise InputError("--figure-photo", f"{mrf} is not in {run_file}")
    try:
        figure(loc, rec, IssMiniContexts(iss.root), out)
    except ValueError as err:
        raise InputError("--figure-photo", str(err)) from None


@refine_app.command("calibrate")
def calibrate_cmd(
    run_file: Path = typer.Argument(..., help="Run file from `earthloc refine run`."),
    precision: float = typer.Option(0.99, "--precision", min=0.5, max=0.9999, help="Target precision of the threshold."),
    data: Path = typer.Option(None, "--data", help="iss_mini folder (default: $EARTHLOC_SHARED/data/iss_mini)."),
    out: Path = typer.Option(None, "--out", help="Calibration JSON (default: the one shipped in earthloc/refine/)."),
) -> None:
    """Fit P(correct | inliers) (logistic) on a run and store the inlier threshold at PRECISION."""
    from earthloc.refine.calibration import save_calibration
    from earthloc.refine.evaluate import calibrate

    matcher, outs = _outcomes([run_file], data)[run_file]
    cal = calibrate(outs, matcher, precision, data=f"iss_mini run {run_file.name}: {len(outs)} photos")
    path = save_calibration(cal, out)
    typer.echo(f"{matcher}: P = sigmoid({cal.intercept:.3f} + {cal.coef:.4f} * inliers); "
               f">= {cal.threshold_inliers} inliers for {precision:.2%} -> {path}", err=True)


@refine_app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run files from `earthloc refine run` (one per matcher)."),
    out: Path = typer.Option(None, "--out", help="Markdown report (default: print)."),
    precision: float = typer.Option(0.99, "--precision", help="Precision for the cross-validated confidence threshold."),
    data: Path = typer.Option(None, "--data", help="iss_mini folder (default: $EARTHLOC_SHARED/data/iss_mini)."),
    figure: Path = typer.Option(None, "--figure", help="Also draw a PNG of one photo's refinement (first run)."),
    figure_photo: str = typer.Option("ISS050-E-70536", "--figure-photo", help="MRF drawn by --figure."),
) -> None:
    """Recall before/after re-ranking, footprint accuracy and timing, one row per run (markdown)."""
    from earthloc.atomic import write_text
    from earthloc.refine.run_report import render

    text = render(_outcomes(list(runs), data), precision)
    if figure is not None:
        _figure(runs[0], figure_photo, figure, data)
    if out is None:
        typer.echo(text)
    else:
        write_text(out, text)
        typer.echo(f"report -> {out}", err=True)


@refine_app.command("verify-run")
def verify_run_cmd(
    index: Path = typer.Option(..., "--index", help="Index folder over a DB holding the iss_mini places."),
    out: Path = typer.Option(..., "--out", help="Run file (JSON lines, one per photo; an existing file is resumed)."),
    data: Path = typer.Option(None, "--data", help="iss_mini folder (default: $EARTHLOC_SHARED/data/iss_mini)."),
    top_k: int = typer.Option(50, "--top-k", min=1, help="Candidates verified per photo."),
) -> None:
    """Search and verify every iss_mini photo; store per photo the hits and the calibration features."""
    from rich.progress import track

    from earthloc.eval.verification import verify_run
    from earthloc.pipeline import open_locator
    from earthloc.refine.verify import Verifier

    iss = _iss_mini(data)
    locator = open_locator(index)
    verifier = Verifier.open(locator.index.db_dir, locator.index.path, top_k)
    recs = verify_run(locator, verifier, iss.photos(), out,
                      progress=lambda xs: track(xs, description="verify"))
    n = len(recs)
    typer.echo(f"{n} photos: retrieval rank-1 {sum(r['retrieval_first_hit'] == 1 for r in recs)}, verified rank-1 "
               f"{sum(r['verified_first_hit'] == 1 for r in recs)}, footprint holds centre "
               f"{sum(r['footprint_holds_centre'] for r in recs)} -> {out}", err=True)


@refine_app.command("verify-calibrate")
def verify_calibrate_cmd(
    run_file: Path = typer.Argument(..., help="Run file from `earthloc refine verify-run`."),
    precision: float = typer.Option(0.95, "--precision", min=0.5, max=0.999, help="Precision at the threshold."),
    out: Path = typer.Option(None, "--out", help="Calibration JSON (default: the one shipped in earthloc/refine/)."),
) -> None:
    """Fit P(refined footprint holds the true centre) on a verify run, leave-one-photo-out figures too."""
    from earthloc.refine.calibration import fit_verify_calibration, save_verify_calibration
    from earthloc.refine.evaluate import read_run

    if not run_file.is_file():
        raise InputError(run_file, "no such run file (make one with `earthloc refine verify-run`)")
    recs = read_run(run_file)
    cal = fit_verify_calibration([r["inliers"] for r in recs], [r["runner_up"] for r in recs],
                                 [r["footprint_holds_centre"] for r in recs], precision, data=run_file.name)
    path = save_verify_calibration(cal, out)
    typer.echo(f"P = sigmoid({cal.intercept:.3f} + {cal.coef_inliers:.3f} log1p(inliers) + {cal.coef_runner_up:.3f} "
               f"log1p(runner_up)); threshold {cal.threshold:.3f}; leave-one-photo-out: {cal.loo_correct}/"
               f"{cal.loo_confident} confident answers right ({cal.n_correct}/{cal.n_photos} right overall) -> {path}",
               err=True)

"""``earthloc eval ...``: evaluation commands (test areas, the official protocol, the real-photo benchmark)."""

from __future__ import annotations

from pathlib import Path

import typer

from earthloc.errors import InputError

eval_app = typer.Typer(help="Evaluate: official test areas, official protocol, real-photo benchmark.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.add_typer(eval_app, name="eval")


# Commands are added below, one function each, decorated with @eval_app.command(...).


@eval_app.command("official")
def official(
    dataset: Path = typer.Option(..., "--dataset", help="Dataset in the official layout: DIR/database/..., DIR/queries/..."),
    model: str = typer.Option("lite0-gem", "--model", help="Model name (earthloc model list)."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated models to compare (e.g. "
                                                                "earthloc,earthloc2), each with its fetched or "
                                                                "packaged weights: prints the paper-layout table."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Weights file for --model (official/TorchGeo)."),
    rotations: str = typer.Option("db", "--rotations", help="'db': 4x rotated DB, duplicates counted as the official "
                                                            "code does (the paper); 'query': rotate the photo, merged."),
    visible_area: bool = typer.Option(False, "--visible-area", help="Search only DB images in each photo's visible disk."),
    year: int | None = typer.Option(None, "--year", help="DB year to test on (default 2021, else the latest present)."),
    area: list[str] = typer.Option([], "--area", help="Test area(s) to run (default: all six)."),
    k: int = typer.Option(100, "--k", min=1, help="Slots retrieved per query."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per encoder batch."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the recalls and counts as JSON here."),
    all_variants: bool = typer.Option(False, "--all-variants", help="Run both rotation modes, each with and without "
                                                                    "--visible-area, from one encoding; print the "
                                                                    "paper-layout table."),
    markdown: Path | None = typer.Option(None, "--markdown", help="With --models: write the table as Markdown here."),
    csv_out: Path | None = typer.Option(None, "--csv", help="With --models: write the table as CSV here."),
    published: bool = typer.Option(False, "--published", help="With --models: add the published figures of the "
                                                              "models that have them (their own test set) as "
                                                              "reference rows."),
) -> None:
    """Run the official EarthLoc protocol: six areas, footprint positives, R@1/5/10/20/100."""
    import json

    from earthloc.atomic import write_text
    from earthloc.eval.official import format_run, run_label, run_official, run_official_variants
    from earthloc.models.registry import load_model

    if rotations not in ("db", "query"):
        raise InputError("--rotations", f"must be 'db' or 'query', got {rotations!r}")
    if not dataset.is_dir():
        raise InputError(dataset, "dataset folder not found")
    if models is not None:
        if checkpoint is not None or all_variants:
            raise InputError("--models", "cannot be combined with --checkpoint or --all-variants (each model "
                                         "loads its own fetched or packaged weights)")
        _compare_models(dataset, models, rotations, visible_area, year, area, k, batch_size, markdown, csv_out,
                        published)
        return
    if markdown is not None or csv_out is not None or published:
        raise InputError("--markdown/--csv/--published", "need --models")
    if all_variants:
        from earthloc.eval.report import official_table

        runs = run_official_variants(dataset, load_model(model, checkpoint=checkpoint), year=year, areas=area or None,
                                     k=k, batch_size=batch_size)
        typer.echo(f"Official protocol on {dataset}, DB year {runs[0].year}\n")
        typer.echo(official_table([(run_label(r), r) for r in runs]))
        run = runs[0]
    else:
        run = run_official(dataset, load_model(model, checkpoint=checkpoint), rotations=rotations,
                           visible_area=visible_area, year=year, areas=area or None, k=k, batch_size=batch_size)
        typer.echo(format_run(run))
    for a in run.areas:
        for why, n in a.dropped.items():
            typer.echo(f"  {a.area}: dropped {n} selected photo(s): {why}")
    if json_out is not None:
        doc = {"variants": [_run_doc(r) for r in runs]} if all_variants else _run_doc(run)
        write_text(json_out, json.dumps(doc, indent=2) + "\n")


def _compare_models(dataset: Path, models: str, rotations: str, visible_area: bool, year: int | None,
                    area: list[str], k: int, batch_size: int, markdown: Path | None, csv_out: Path | None,
                    published: bool) -> None:
    """Run the protocol once per model and print / write the paper-layout table (Markdown and CSV)."""
    from earthloc.atomic import write_text
    from earthloc.eval.official import paper_csv, paper_markdown, published_rows, run_official, table_row
    from earthloc.models.registry import load_model, model_spec

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError("--models", f"give distinct model names, comma-separated (got {models!r})")
    specs = [model_spec(n) for n in names]  # unknown names fail before any encoding
    rows, refs, years = [], [], []
    for name, spec in zip(names, specs):
        run = run_official(dataset, load_model(name), rotations=rotations, visible_area=visible_area, year=year,
                           areas=area or None, k=k, batch_size=batch_size)
        rows.append(table_row(name, spec.descriptor_dim, run))
        years.append(run.year)
        if published and spec.published is not None:
            refs += published_rows(name, spec.descriptor_dim, spec.published, [a.area for a in run.areas])
    rows += refs
    mode = "4x rotated DB (official count)" if rotations == "db" else "query rotations (merged)"
    typer.echo(f"Official protocol on {dataset}, DB year {years[-1]}, {mode}"
               + (", visible area" if visible_area else "") + "\n")
    typer.echo(paper_markdown(rows))
    if markdown is not None:
        write_text(markdown, paper_markdown(rows) + "\n")
    if csv_out is not None:
        write_text(csv_out, paper_csv(rows))


def _run_doc(run) -> dict:
    """A JSON-ready summary of an :class:`earthloc.eval.official.OfficialRun`."""
    return {"dataset": run.dataset, "model": run.model, "rotations": run.rotations, "visible_area": run.visible_area,
            "year": run.year, "areas": [{"area": a.area, "queries": list(a.mrfs), "n_selected": a.n_selected,
                                         "n_db": len(a.db_rows), "recalls": a.recalls, "dropped": a.dropped,
                                         "unreachable": a.unreachable} for a in run.areas]}


@eval_app.command("photos")
def photos(
    index: list[Path] = typer.Option(..., "--index", help="Index folder(s) built over one DB (earthloc index build)."),
    photos_src: Path = typer.Option(..., "--photos", help="Photos: a CSV (iss_mini/queries.csv shape) or a folder."),
    reference: Path | None = typer.Option(None, "--reference", help="Candidate lists to score as the reference row "
                                                                       "(iss_mini/candidates.csv)."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="Weights of indexes built from a checkpoint."),
    rule: list[str] = typer.Option([], "--rule", help="Positive rule(s): 'centre' (DB image contains NASA's centre "
                                                      "point), 'footprint' (overlaps the footprint), 'iou>=T' (IoU with "
                                                      "the footprint at least T). Default: centre and footprint."),
    k: int = typer.Option(100, "--k", min=1, help="Candidates ranked per photo."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random-choice ranking."),
    report: Path | None = typer.Option(None, "--report", help="Write the report (Markdown, PNGs, HTML map) here."),
) -> None:
    """The real-photo benchmark: R@1/5/10/20/100 of our models, baselines and the reference lists."""
    import shlex
    import sys

    from earthloc.eval.photo_benchmark import RULES, benchmark, parse_rule
    from earthloc.eval.report import markdown_table
    from earthloc.photos import load_photos

    for r in rule:
        parse_rule(r)
    if reference is not None and not reference.is_file():
        raise InputError(reference, "reference candidates file not found")
    photo_list = load_photos(photos_src)
    if not photo_list:
        raise InputError(photos_src, "no photos found")
    tables = benchmark(photo_list, index, reference, rules=rule or RULES, k=k, seed=seed, checkpoints=checkpoint)
    for r, scores in tables.items():
        typer.echo(f"\n{r} positives ({len(photo_list)} photos)\n")
        typer.echo(markdown_table(scores))
    if report is not None:
        from earthloc.eval.report import write_iss_report

        command = "earthloc eval " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("photos"):])
        for p in write_iss_report(report, tables, command):
            typer.echo(f"wrote {p}")


@eval_app.command("areas")
def areas(
    queries: Path = typer.Option(..., "--queries", help="Photos: a CSV like earthloc_meta/queries.csv (nadir, corners) "
                                                        "or a folder of officially named images."),
    db: Path | None = typer.Option(None, "--db", help="DB images: a CSV like earthloc_meta/db_tiles_2021.csv, or a "
                                                         "DB folder (manifest.parquet or the official layout)."),
    photo_radius_km: float = typer.Option(2500.0, "--photo-radius-km", help="Photo selection radius around the area "
                                                                            "centre (ISS nadir distance)."),
    db_radius_km: float = typer.Option(5000.0, "--db-radius-km", help="DB selection radius (footprint centre distance)."),
    year: int | None = typer.Option(None, "--year", help="DB year (default 2021, the official test year, else the latest)."),
) -> None:
    """Per official test area: how many photos (nadir < 2500 km) and DB images (centre < 5000 km) are selected;
    with --db also how many photos survive the official drop rule (a positive in the DB, all positives inside)."""
    from earthloc.eval.protocol import (
        build_area_set,
        db_for_year,
        load_db_table,
        select_db_mask,
        select_photos,
    )
    from earthloc.geo.areas import TEST_AREAS
    from earthloc.photos import load_photos

    photo_list = load_photos(queries)
    table, db_year = db_for_year(load_db_table(db), year) if db is not None else (None, None)
    with_nadir = sum(p.nadir is not None for p in photo_list)
    typer.echo(f"{len(photo_list)} photos ({with_nadir} with a nadir)"
               + ("" if table is None else f", {len(table)} DB images" + (f" of {db_year}" if db_year else "")))
    head = f"{'area':<8} {'centre':>13} {'photos':>7}"
    typer.echo(head + ("" if table is None else f" {'db':>7} {'kept':>6} {'no_pos':>6} {'outside':>7} {'no_fp':>6}"))
    for name, (lat, lon) in TEST_AREAS.items():
        line = f"{name:<8} {f'{lat:g},{lon:g}':>13} "
        if table is None:
            typer.echo(line + f"{len(select_photos(photo_list, name, photo_radius_km)):>7}")
            continue
        s = build_area_set(photo_list, table, name, photo_radius_km, db_radius_km)
        n_db = int(select_db_mask(table, name, db_radius_km).sum())
        typer.echo(line + f"{s.n_selected:>7} {n_db:>7} {len(s.photos):>6} {s.n_no_positive:>6} "
                          f"{s.n_positive_outside:>7} {s.n_no_footprint:>6}")

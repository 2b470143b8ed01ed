"""``earthloc train``: the EarthLoc training recipe; ``earthloc train-data``: build offline training DBs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.command("train")(train)
    app.command("train-data")(train_data)
    app.command("train-eval")(train_eval)


def train(
    db: list[Path] = typer.Option(..., "--db", help="Training DB folder (repeatable). Multi-year DBs give "
                                                     "cross-year positives; single-year DBs augmentation-only ones."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best_model.pt, epochs.csv, steps.csv."),
    val_db: list[Path] = typer.Option([], "--val-db", help="Held-out multi-year DB folder (repeatable); must not "
                                                            "overlap the training places."),
    model: str = typer.Option("lite0-gem", "--model", help="earthloc | lite0-gem | lite0-mixvpr."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Initial weights (state_dict) for the model."),
    random_init: bool = typer.Option(False, "--random-init", help="Start from random weights (no ImageNet)."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Maximum epochs (official 20)."),
    steps: int = typer.Option(500, "--steps-per-epoch", min=1, help="Steps per epoch (official 500)."),
    batch_regions: int = typer.Option(96, "--batch-regions", min=2, help="Regions per batch (official 96)."),
    years: int = typer.Option(4, "--years", min=2, help="Year slots per region (official 4)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (official 1e-4)."),
    image_size: int = typer.Option(None, "--image-size", help="Model input px (multiple of 32; default: the "
                                                             "model's, 320). lite0-mixvpr needs 320."),
    load_size: int = typer.Option(None, "--load-size", help="DB images are resized to this before augmentation "
                                                           "(official 800; default 2.5 x image size)."),
    clusters: int = typer.Option(None, "--clusters", help="k-means clusters (official 50; default ~regions/4/batch)."),
    refresh: int = typer.Option(4, "--refresh-epochs", min=1, help="Re-cluster every N epochs (official 4)."),
    clustered: bool = typer.Option(True, "--clustered/--no-clustered", help="Batches from one cluster."),
    yearwise: bool = typer.Option(True, "--yearwise/--no-yearwise", help="One augmentation per year slot "
                                                                        "(off: one per image)."),
    neutral: bool = typer.Option(True, "--neutral/--no-neutral", help="Drop negatives on overlapping tiles."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Augment at all."),
    freeze: str = typer.Option("default", "--freeze", help="'default' (official: ResNet conv1..layer2; lite0: stem "
                                                          "+ blocks 0-4), 'none', or comma-separated parameter-name "
                                                          "prefixes."),
    patience: int = typer.Option(10, "--patience", min=1, help="Early stop after N epochs without R@5 gain."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop (after validating) once training has run "
                                                                  "this long."),
    val_rotate: bool = typer.Option(True, "--val-rotate/--no-val-rotate", help="Rotate validation queries randomly."),
    seed: int = typer.Option(0, "--seed", help="Seed of clusters, batches and augmentation."),
    val_seed: int = typer.Option(0, "--val-seed", help="Seed of the validation queries (years, rotations)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last checkpoint "
                                                        "(OUT/last.pt, written after every epoch)."),
) -> None:
    """Train a descriptor model with the EarthLoc recipe (OUT/last.pt after every epoch; --resume continues).

    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m earthloc.cli.main train ...` (docs/train.md).
    """
    from earthloc.errors import InputError
    from earthloc.train.loop import TrainConfig
    from earthloc.train.loop import train as run

    for d in [*db, *val_db]:
        if not d.is_dir():
            raise InputError(d, "DB folder not found")
    prefixes: tuple[str, ...] | None
    if freeze == "default":
        prefixes = None
    elif freeze == "none":
        prefixes = ()
    else:
        prefixes = tuple(p.strip() for p in freeze.split(",") if p.strip())
    cfg = TrainConfig(
        dbs=tuple(str(d) for d in db), out=str(out), val_dbs=tuple(str(d) for d in val_db), model=model,
        init_checkpoint=str(checkpoint) if checkpoint else None, random_init=random_init, epochs=epochs,
        steps_per_epoch=steps, batch_regions=batch_regions, years=years, lr=lr, image_size=image_size,
        load_size=load_size, clusters=clusters, refresh_epochs=refresh, clustered=clustered, yearwise=yearwise,
        neutral=neutral, augment=augment, freeze=prefixes, patience=patience, max_minutes=max_minutes,
        val_rotate=val_rotate, val_seed=val_seed, seed=seed, device=device, threads=threads, progress=progress,
        resume=resume,
    )
    res = run(cfg)
    if res.history:
        start, best = res.history[0], res.best
        if "R@1" in start:
            typer.echo(f"held-out R@1 {start['R@1']:.1f} (start) -> {best.get('R@1', float('nan')):.1f} "
                       f"(best, epoch {res.best_epoch}); model: {out / 'best_model.pt'}")


def train_data(
    out: Path = typer.Option(..., "--out", help="Folder for the <name>-train / <name>-heldout DB folders."),
    sources: str = typer.Option("bluemarble,landsat,naip,iss_mini", "--sources",
                                help="Comma-separated recipes: bluemarble, landsat, naip, iss_mini."),
    gpredict: Path = typer.Option(None, "--gpredict", help="Folder where gpredict_*.deb was extracted "
                                                           "(dpkg-deb -x); gives the monthly Blue Marble maps."),
    workers: int = typer.Option(2, "--workers", min=1, help="DB builder threads."),
) -> None:
    """Build the offline multi-year training DBs (train and held-out places) with the DB builder."""
    import json

    from earthloc.train.datasets import build_training_dbs

    names = [s.strip() for s in sources.split(",") if s.strip()]
    report = build_training_dbs(out, names, gpredict_dir=gpredict, workers=workers)
    typer.echo(json.dumps(report, indent=1))


def train_eval(
    val_db: list[Path] = typer.Option(..., "--val-db", help="Held-out multi-year DB folder (repeatable)."),
    model: str = typer.Option("lite0-gem", "--model", help="Model name."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights (e.g. RUN/best_model.pt); default: the "
                                                               "model's own start weights."),
    image_size: int = typer.Option(None, "--image-size", help="Input px (default: the model's)."),
    load_size: int = typer.Option(None, "--load-size", help="Decode size (default 2.5 x image size)."),
    val_rotate: bool = typer.Option(True, "--val-rotate/--no-val-rotate", help="Rotate queries randomly."),
    seed: int = typer.Option(0, "--val-seed", help="Seed of the query years and rotations (as `train --val-seed`)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
) -> None:
    """Held-out cross-year retrieval R@1/5/10/20 of a model (the validation `earthloc train` runs)."""
    import json

    from earthloc.models.registry import load_model
    from earthloc.train.data import ImageCache, load_regions
    from earthloc.train.loop import _device
    from earthloc.train.validate import evaluate, make_valset

    m = load_model(model, checkpoint=checkpoint)
    size = image_size or m.image_size
    dev = _device(device, 0)
    m.to(dev)
    regions = load_regions(list(val_db), min_years=2)
    vs = make_valset(regions, seed=seed, rotate=val_rotate)
    rec = evaluate(m, vs, ImageCache(load_size or int(round(size * 2.5))), size, m.preprocessing.mean,
                   m.preprocessing.std, dev)
    typer.echo(json.dumps({"model": model, "checkpoint": str(checkpoint) if checkpoint else None, "image_size": size,
                           "queries": len(vs.queries), "db_regions": len(vs.regions),
                           "recall": {k: round(v, 2) for k, v in rec.items()}}))

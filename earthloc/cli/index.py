"""``earthloc index ...``: build an index folder from a DB folder, show what an index holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer

index_app = typer.Typer(help="Build and inspect FAISS indexes of DB descriptors.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.add_typer(index_app, name="index")


@index_app.command("build")
def build(
    db: Path = typer.Option(..., "--db", help="DB folder (official layout + manifest.parquet)."),
    out: Path = typer.Option(..., "--out", help="Index folder to write."),
    model: str = typer.Option("lite0-gem", "--model", help="Descriptor model name (`earthloc model list`)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file for the model."),
    rotations: str = typer.Option("query", "--rotations",
                                  help="'query': 1x index, photos encoded at 0/90/180/270 (default); "
                                       "'db': official 4x rotated index, photos encoded once."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (exact), fp16 (half the bytes) or pq (d/8 bytes)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="Where to encode: cpu, cuda, cuda:N or auto (GPU if any)."),
    ray: str = typer.Option(None, "--ray", help="Encode chunks as Ray tasks: 'local' (Ray on this machine), 'auto' "
                                                "(the running cluster) or a cluster address. Needs earthloc[ray]."),
    ray_cpus: int = typer.Option(1, "--ray-cpus", min=1, help="CPUs (torch threads) per Ray task."),
    chunk: int = typer.Option(1024, "--chunk", min=1, help="Images per chunk (the unit of resume and of Ray tasks)."),
    local_features: bool = typer.Option(False, "--local-features",
                                        help="Also store the DB images' XFeat features for verification "
                                             "(69,636 bytes per image; `earthloc locate` then skips extracting them)."),
) -> None:
    """Encode every DB image with MODEL and write a FAISS index folder (resumable per 1,024 images)."""
    from earthloc.errors import InputError
    from earthloc.index.formats import PRECISIONS, RotationMode
    from earthloc.index.store import Index
    from earthloc.models.encoders import LocalEncoder, RayEncoder
    from earthloc.models.fast import resolve_device
    from earthloc.models.registry import load_model

    device = resolve_device(device)  # a missing GPU is bad input, before any work
    mode = RotationMode.parse(rotations)
    if precision not in PRECISIONS:
        raise InputError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not db.is_dir():
        raise InputError(db, "DB folder not found")
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; --out names the index folder to write")
    net = load_model(model, checkpoint)
    encoder = (RayEncoder(net, address=ray, cpus=ray_cpus, device=device, batch_size=batch_size) if ray
               else LocalEncoder(net, device=device, batch_size=batch_size))
    index = Index.build(db, encoder, out, rotations=mode, precision=precision, chunk=chunk)
    typer.echo(f"indexed {len(index)} DB images ({index.faiss.ntotal} vectors, {index.precision}, "
               f"rotations={index.rotations}) with {index.model_name} -> {out}")
    if local_features:
        from earthloc.refine.features import build_store, bytes_per_image

        store = build_store(out, db.resolve())
        typer.echo(f"local features of {len(index)} DB images ({bytes_per_image():,} bytes each) -> {store}")


@index_app.command("info")
def info(path: Path = typer.Argument(..., help="Index folder.")) -> None:
    """Print an index folder's metadata (model identity, rotations, precision, size) as JSON."""
    from earthloc.index.store import Index

    index = Index.open(path)
    meta = dict(index.meta)
    meta["vectors"] = int(index.faiss.ntotal)
    meta["bytes_per_image"] = round(index.nbytes() / max(1, len(index)), 1)
    meta["zooms"] = sorted(int(z) for z in index.manifest["tile"].str[:2].astype(int).unique())
    meta["years"] = sorted(int(y) for y in index.manifest["year"].unique())
    typer.echo(json.dumps(meta, indent=2))

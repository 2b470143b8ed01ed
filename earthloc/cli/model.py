"""``earthloc model list | info NAME | fetch NAME``: the descriptor models and their weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from earthloc.errors import InputError

model_app = typer.Typer(help="Descriptor models: list them, show details, download official weights.",
                        no_args_is_help=True)


@model_app.command("list")
def list_cmd() -> None:
    """List the registered models (name, descriptor dim, input size, summary)."""
    from earthloc.models.registry import DEFAULT_MODEL, list_models, model_spec

    for name in list_models():
        s = model_spec(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        typer.echo(f"{name:<14} {s.descriptor_dim:>5}-d  {s.image_size} px  {s.summary}{mark}")


@model_app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="Model name, see `earthloc model list`.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Weights file to load (state_dict).")] = None,
) -> None:
    """Show descriptor dim, input size, parameter count, where the weights come from, and the fast path."""
    from earthloc.models.fast import bf16_supported, resolve_path
    from earthloc.models.fetch import EARTHLOC_WEIGHTS, cached_path
    from earthloc.models.registry import load_model, model_spec

    spec = model_spec(name)
    pretrained = True
    if name == "earthloc" and checkpoint is None and not cached_path(EARTHLOC_WEIGHTS).is_file():
        pretrained = False  # still show the architecture; say where weights would come from
    model = load_model(name, checkpoint=checkpoint, pretrained=pretrained)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = {
        "name": name,
        "summary": spec.summary,
        "descriptor dim": model.descriptor_dim,
        "input size": f"{model.image_size} x {model.image_size} px RGB",
        "normalisation": f"mean {tuple(round(v, 4) for v in model.preprocessing.mean)}, "
                         f"std {tuple(round(v, 4) for v in model.preprocessing.std)}",
        "parameters": f"{model.num_parameters():,}",
        "trainable": f"{trainable:,}" if spec.trainable else "no (no trained head)",
        "weights": model.weights_source if pretrained else f"none loaded; get them with {spec.weights}",
        "weights sha256": model.checkpoint_hash or "-",
        "CPU path": f"{resolve_path(model)} (native bf16: {'yes' if bf16_supported() else 'no'})",
    }
    if name == "earthloc":
        lines["cache"] = str(cached_path(EARTHLOC_WEIGHTS))
    for k, v in lines.items():
        typer.echo(f"{k + ':':<16}{v}")


@model_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="Model whose weights to download (only `earthloc` has remote ones).")],
    force: Annotated[bool, typer.Option(help="Download again even when cached.")] = False,
) -> None:
    """Download the official EarthLoc weights (TorchGeo's Hugging Face mirror) into the cache, hash-checked."""
    from earthloc.models.fetch import EARTHLOC_WEIGHTS, fetch
    from earthloc.models.registry import model_spec

    model_spec(name)
    if name != "earthloc":
        raise InputError(name, "its weights ship with the Python packages; nothing to fetch")
    path = fetch(EARTHLOC_WEIGHTS, force=force)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to the main app."""
    app.add_typer(model_app, name="model")

"""``earthloc model list | info NAME | fetch NAME``: the descriptor models and their weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    checkpoint: Annotated[Path | None, typer.Option(help="Weights file to load (state_dict).")] = None,
) -> None:
    """Show descriptor dim, input size, parameter count, where the weights come from, and the fast path."""
    from earthloc.models.fast import bf16_supported, resolve_path
    from earthloc.models.fetch import EARTHLOC2_WEIGHTS, EARTHLOC_WEIGHTS, cached_path
    from earthloc.models.registry import has_weights, load_model, model_spec

    spec = model_spec(name)
    # Without weights still show the architecture, and say where weights would come from.
    pretrained = checkpoint is not None or has_weights(name)
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
    if name == "earthloc2":
        lines["cache"] = f"{EARTHLOC2_WEIGHTS.local_dir}/ (one weights file)"
    if (pub := spec.published) is not None:
        ns = "/".join(f"R@{n}" for n in pub.ns)
        fig = lambda v: "/".join(f"{x:.1f}" for x in v)  # noqa: E731
        lines[f"published {ns}"] = f"{fig(pub.average)} average over the test areas"
        if pub.per_area:
            lines["  per area"] = ", ".join(f"{a} {fig(v)}" for a, v in pub.per_area)
        if pub.baseline:
            lines["  same table"] = f"{pub.baseline[0]} {fig(pub.baseline[1])} average"
        lines["  source"] = pub.source
    width = max(len(k) for k in lines) + 2
    for k, v in lines.items():
        typer.echo(f"{k + ':':<{width}}{v}")


@model_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="Model whose weights to download: `earthloc` or `earthloc2`.")],
    force: Annotated[bool, typer.Option(help="Download again even when cached.")] = False,
) -> None:
    """Download released weights into the cache, hash-checked: `earthloc` from TorchGeo's Hugging Face mirror,
    `earthloc2` from Hugging Face pawlo2013/EarthLoc2 (HF_ENDPOINT for a mirror)."""
    from earthloc.models.fetch import EARTHLOC2_WEIGHTS, EARTHLOC_WEIGHTS, fetch, fetch_hub
    from earthloc.models.registry import model_spec

    model_spec(name)
    if name == "earthloc":
        path = fetch(EARTHLOC_WEIGHTS, force=force)
    elif name == "earthloc2":
        path = fetch_hub(EARTHLOC2_WEIGHTS, force=force)
    else:
        raise InputError(name, "its weights ship with the Python packages; nothing to fetch")
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to the main app."""
    app.add_typer(model_app, name="model")

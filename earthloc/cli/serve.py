"""``earthloc serve``: the web app over an index (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    index: Path = typer.Option(..., "--index", help="Index folder made by `earthloc index build`."),
    model: str = typer.Option(None, "--model", help="Model name (default: the index's model)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file for the model, if it needs one."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
) -> None:
    """Serve a map page and a JSON API (POST /api/locate) that localize uploaded photos."""
    import uvicorn

    from earthloc.service.app import create_app

    uvicorn.run(create_app(index, model, checkpoint), host=host, port=port, log_level="info")

"""``earthloc serve``: the web app over an index (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

TOKEN_ENV = "EARTHLOC_TOKEN"


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)


def serve(
    index: Path = typer.Option(..., "--index", help="Index folder made by `earthloc index build`."),
    model: str = typer.Option(None, "--model", help="Model name (default: the index's model)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file for the model, if it needs one."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    token: str = typer.Option(None, "--token", help=f"Bearer token the API requires (or set {TOKEN_ENV}); "
                                                    "required when --host is not a loopback address."),
    workers: int = typer.Option(1, "--workers", min=1, help="Photos localized at once (worker threads)."),
    queue: int = typer.Option(8, "--queue", min=0, help="Jobs waiting beyond those; more get 429 Retry-After."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Verify candidates and refine the answer's footprint unless a job says otherwise."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="CPU threads for encoding/matching (default: all cores but one, so pages and "
                                     "tiles keep a core while jobs run)."),
) -> None:
    """Serve the map page and the job API (POST /api/jobs, GET /api/jobs/ID) that localize uploaded photos."""
    import uvicorn

    from earthloc.errors import InputError
    from earthloc.service.app import ServiceOptions, create_app

    bearer = token or os.environ.get(TOKEN_ENV) or None
    if bearer is None and not _is_loopback(host):
        raise InputError("token", f"required when listening on {host} (not a loopback address): "
                                  f"give a bearer token or set {TOKEN_ENV}")
    import torch

    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
    options = ServiceOptions(token=bearer, workers=workers, max_queued=queue, verify=verify)
    uvicorn.run(create_app(index, model, checkpoint, options), host=host, port=port, log_level="info")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

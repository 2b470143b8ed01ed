"""``earthloc eval ...``: evaluation commands (test areas, the official protocol, the real-photo benchmark)."""

from __future__ import annotations

import typer

eval_app = typer.Typer(help="Evaluate: official test areas, official protocol, real-photo benchmark.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


# Commands are added below, one function each, decorated with @eval_app.command(...).

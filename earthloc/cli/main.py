"""Entry point of the ``earthloc`` console script.

Each stage has its own module here exposing ``register(app)``; this file only wires them together and
turns :class:`earthloc.errors.InputError` into one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import importlib
import sys

import typer

from earthloc.errors import InputError

app = typer.Typer(
    name="earthloc",
    help="Find where on Earth an astronaut photo was taken (EarthLoc retrieval over Sentinel-2 mosaics).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Stage modules, in pipeline order. Each defines ``register(app: typer.Typer) -> None``.
_STAGES = ("db", "model", "index", "locate", "eval", "refine", "train", "serve", "demo")

for _name in _STAGES:
    try:
        _mod = importlib.import_module(f"earthloc.cli.{_name}")
    except ModuleNotFoundError as err:  # a stage not written yet
        if err.name != f"earthloc.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Run the app; bad input becomes one line on stderr and exit code 2."""
    try:
        rv = app(standalone_mode=False)
    except InputError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # click's own usage errors keep their exit codes
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(1)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()

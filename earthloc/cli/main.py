"""Entry point of the ``earthloc`` console script.

Each stage has its own module here exposing ``register(app)``; this file only wires them together and
turns every kind of bad input into one line ``error: <input>: <problem>`` on stderr and exit code 2,
with no traceback: :class:`earthloc.errors.InputError` from the library, Typer/Click usage errors
(unknown command or option, missing or malformed value) and operating-system errors on a named file
(no such folder, permission, full disk). ``EARTHLOC_TRACEBACK=1`` re-raises them, for debugging.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Sequence

import typer
from typer._click import exceptions as click_exc  # Typer vendors Click: its exceptions live here

from earthloc.cli.flags import error_line
from earthloc.errors import InputError

app = typer.Typer(
    name="earthloc",
    help="Find where on Earth an astronaut photo was taken (EarthLoc retrieval over Sentinel-2 mosaics).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: Rich markup would swallow "[default ...]" and "earthloc[ray]"
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


def _hint(param) -> str:
    """The flag (or argument name) a Click parameter is given by: ``--top``, ``PHOTOS``."""
    opts = getattr(param, "opts", None) or []
    longs = [o for o in opts if o.startswith("--")]
    if longs:
        return longs[0]
    if opts and getattr(param, "param_type_name", "") != "argument":
        return opts[0]
    return (getattr(param, "metavar", None) or param.name or "argument").upper()


def usage_line(err: click_exc.UsageError) -> str:
    """One line for a Typer/Click usage error: ``<input>: <problem>``."""
    command = err.ctx.command_path if err.ctx is not None else "earthloc"
    if isinstance(err, click_exc.MissingParameter):
        where = _hint(err.param) if err.param is not None else command
        return f"{where}: missing (required by `{command}`)"
    if isinstance(err, click_exc.BadParameter) and err.param is not None:
        return f"{_hint(err.param)}: {err.message}"
    if isinstance(err, click_exc.NoSuchOption):
        return f"{err.option_name}: no such option of `{command}` (see `{command} --help`)"
    message = " ".join(err.format_message().split())  # one line, whatever Click wrapped
    if message.startswith("No such command"):
        return f"{command}: {message[0].lower()}{message[1:]} (see `{command} --help`)"
    return f"{command}: {message}"


def _os_line(err: OSError) -> str:
    what = err.strerror or type(err).__name__
    if err.errno == errno.ENOSPC:
        what = "no space left on the device (nothing written)"
    return f"{err.filename}: {what}" if err.filename else what


def _flush_stdout() -> None:
    """Flush stdout now: a full disk or closed pipe behind it is an error too, not exit code 0."""
    try:
        sys.stdout.flush()
    except OSError as err:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure at exit
        raise InputError("standard output", _os_line(err)) from None  # err names no file


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return its exit code; bad input is one
    ``error:`` line on stderr and exit code 2."""
    debug = os.environ.get("EARTHLOC_TRACEBACK") == "1"
    try:
        rv = app(args=list(argv) if argv is not None else None, prog_name="earthloc", standalone_mode=False)
        _flush_stdout()
    except click_exc.NoArgsIsHelpError as err:  # `earthloc db`: the help, and Click's usage exit code
        err.show()
        return err.exit_code
    except click_exc.UsageError as err:
        if debug:
            raise
        typer.echo(f"error: {usage_line(err)}", err=True)
        return 2
    except InputError as err:
        if debug:
            raise
        typer.echo(f"error: {error_line(err)}", err=True)  # parameters named by their flags
        return 2
    except OSError as err:
        if debug or err.filename is None and err.errno != errno.ENOSPC:
            raise  # an OSError on no named file is a bug or a network matter: keep its traceback
        if err.filename is None:  # ENOSPC on no named file: a write to standard output
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        typer.echo(f"error: {_os_line(err) if err.filename else 'standard output: ' + _os_line(err)}", err=True)
        return 2
    except click_exc.ClickException as err:
        typer.echo(f"error: {' '.join(err.format_message().split())}", err=True)
        return err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        return 130
    except typer.Exit as err:
        return err.exit_code
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """The console script."""
    sys.exit(run())


if __name__ == "__main__":
    main()

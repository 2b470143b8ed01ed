"""The parameter -> flag map of the CLI: every flag in it exists on some command, and library errors that
name a parameter come out with the flag."""

from __future__ import annotations

import typer

from earthloc.cli.flags import FLAGS, error_line
from earthloc.cli.main import app
from earthloc.errors import InputError


def _all_options(cmd) -> set[str]:
    opts = {o for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
    opts |= {(p.metavar or p.name or "").upper() for p in getattr(cmd, "params", [])
             if getattr(p, "param_type_name", "") == "argument"}
    for sub in getattr(cmd, "commands", {}).values():
        opts |= _all_options(sub)
    return opts


def test_every_mapped_flag_is_an_option_of_some_command():
    options = _all_options(typer.main.get_command(app))
    assert "--precision" in options and "--ray-cpus" in options
    assert {f for f in FLAGS.values()} <= options


def test_error_line_names_the_flag_not_the_parameter():
    assert error_line(InputError("precision", "must be one of fp32, fp16, pq")) == \
        "--precision: must be one of fp32, fp16, pq"
    assert error_line(InputError("address nowhere:1", "cannot join")) == "--ray nowhere:1: cannot join"
    assert error_line(InputError("/data/x.jpg", "cannot\n read image")) == "/data/x.jpg: cannot read image"

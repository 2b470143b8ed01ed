"""The one place that maps the library's parameter names to this CLI's flags.

Library errors (:class:`earthloc.errors.InputError`) name the *parameter* that is wrong
(``precision``, ``cpus``...); the CLI prints them with the flag a user typed (``--precision``,
``--ray-cpus``). The first word of ``InputError.where`` is looked up here; anything else (a file, a
value) is printed as it is.
"""

from __future__ import annotations

from earthloc.errors import InputError

FLAGS: dict[str, str] = {
    "address": "--ray",
    "areas": "--area",
    "batch": "--ray-batch",
    "cpus": "--ray-cpus",
    "device": "--device",
    "format": "--format",
    "freeze": "--freeze",
    "image_size": "--image-size",
    "index_dirs": "--index",
    "precision": "--precision",
    "refine": "--refine",
    "region": "--region",
    "rotations": "--rotations",
    "rule": "--rule",
    "size": "--size",
    "source": "--source",
    "sources": "PHOTOS",
    "threads": "--workers",
    "top_k": "--top",
    "year": "--year",
    "years": "--years",
}


def error_line(err: InputError) -> str:
    """``<input>: <problem>`` on one line, a parameter name replaced by its flag."""
    head, sep, rest = err.where.partition(" ")
    where = FLAGS[head] + sep + rest if head in FLAGS else err.where
    return " ".join(f"{where}: {err.problem}".split())

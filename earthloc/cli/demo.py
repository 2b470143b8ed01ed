"""``earthloc demo``: the offline end-to-end run on iss_mini (what ``make demo`` calls)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module\'s command(s) to the ``earthloc`` app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder (DB, index, results, map)."),
    top: int = typer.Option(10, "--top", min=1, help="Candidates kept per photo."),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads cutting DB images."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Verify the top 50 candidates by local features, re-rank, refine the answer."),
) -> int:
    """Offline end to end on ../shared/data/iss_mini: build a DB from the context images, index it with
    lite0-gem, localize the real ISS photos (visible disk from their nadir), print a table, write a map.
    Resumable: a rerun reuses what is done."""
    from earthloc.demo import print_report, run_demo

    report = run_demo(out, top_k=top, workers=workers, verify=verify)
    print_report(report)
    return 0 if len(report.ok) == len(report.rows) else 1

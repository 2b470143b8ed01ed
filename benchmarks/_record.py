"""Append one row to docs/benchmarks.md: date, machine, command, figures. Used by every benchmark script."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

_DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_HEADER = "| date (UTC) | machine | command | figures |\n|---|---|---|---|\n"


def machine() -> str:
    """CPU model and core count, e.g. 'Intel Xeon ... x2 cores'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def record(figures: str, command: str | None = None) -> None:
    """Append a row; ``figures`` is a short human-readable string with the ratio against the baseline."""
    command = command or "python " + " ".join(sys.argv)
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    if not _DOC.exists() or not _DOC.read_text().strip():
        _DOC.parent.mkdir(parents=True, exist_ok=True)
        _DOC.write_text("# Benchmarks\n\nRows appended by the scripts in `benchmarks/`; each ratio is against a baseline "
                        "measured in the same run.\n\n" + _HEADER)
    with _DOC.open("a") as f:
        f.write(f"| {date} | {machine()} | `{command}` | {figures.replace('|', '/')} |\n")

"""Running a benchmark leaves the tracked docs/benchmarks.md alone: every script appends its row only
under ``--record`` (each call of ``benchmarks._record.record`` sits inside ``if args.record:``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCRIPTS = sorted(p for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")
                 if not p.name.startswith("_"))


def _guarded_record_calls(tree: ast.AST) -> tuple[int, int]:
    """(calls of record(...), those inside an ``if <...>.record`` block)."""
    calls = guarded = 0

    def walk(node: ast.AST, under: bool) -> None:
        nonlocal calls, guarded
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "record":
            calls += 1
            guarded += under
        if isinstance(node, ast.If):
            flag = isinstance(node.test, ast.Attribute) and node.test.attr == "record"
            walk(node.test, under)
            for child in node.body:
                walk(child, under or flag)
            for child in node.orelse:
                walk(child, under)
            return
        for child in ast.iter_child_nodes(node):
            walk(child, under)

    walk(tree, False)
    return calls, guarded


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_benchmark_records_only_when_asked(script):
    src = script.read_text()
    calls, guarded = _guarded_record_calls(ast.parse(src))
    assert calls == guarded, f"{script.name}: {calls - guarded} record() call(s) run without --record"
    if calls:
        assert '"--record"' in src

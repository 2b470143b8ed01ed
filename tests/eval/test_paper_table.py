"""The paper-layout table of `earthloc eval official --models ...` (method, descriptor size, R@1/R@10/R@100 per
area and average; Markdown and CSV), on the small official-layout dataset of conftest.py."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from earthloc.eval.official import (
    ROTATIONS,
    OfficialRun,
    evaluate_areas,
    load_dataset,
    paper_csv,
    paper_markdown,
    published_rows,
    table_row,
)
from earthloc.models.registry import model_spec

DB_YEAR = 2018
AREAS = ("alps", "texas", "toshka", "amazon", "napa", "gobi")


@pytest.fixture(scope="module")
def lite_run(official_dataset) -> OfficialRun:
    """The official protocol for lite0-gem computed in-process (4x rotated DB, official counting)."""
    from earthloc.models.encode import encode
    from earthloc.models.registry import load_model

    db, photos, _ = load_dataset(official_dataset, DB_YEAR)
    model = load_model("lite0-gem")
    db_desc = encode(model, [official_dataset / p for p in db["path"]], rotations=ROTATIONS, progress=False)
    q_desc = encode(model, [p.path for p in photos], rotations=(0,), progress=False)
    areas = evaluate_areas(photos, db, q_desc, db_desc, "db")
    return OfficialRun(str(official_dataset), "lite0-gem", "db", False, DB_YEAR, tuple(areas))


def _parse_csv(text: str) -> dict[str, dict[str, str]]:
    return {row["method"]: row for row in csv.DictReader(io.StringIO(text))}


def test_row_average_is_mean_of_area_figures(lite_run):
    row = table_row("lite0-gem", 1280, lite_run)
    with_queries = [a for a in lite_run.areas if a.n_queries]
    assert with_queries and len(with_queries) < len(lite_run.areas)  # some areas keep no query here
    for i, n in enumerate((1, 10, 100)):
        assert row.average[i] == pytest.approx(np.mean([a.recalls[n] for a in with_queries]))
    for a in lite_run.areas:
        assert row.per_area[a.area] == (None if not a.n_queries else (a.recalls[1], a.recalls[10], a.recalls[100]))
        assert row.kept[a.area] == a.n_queries


def test_markdown_and_csv_layout(lite_run):
    spec = model_spec("earthloc2")
    rows = [table_row("lite0-gem", 1280, lite_run), *published_rows("earthloc2", 3072, spec.published, AREAS)]
    md = paper_markdown(rows).splitlines()
    assert md[0] == ("| Method | Desc. size | Alps R@1/R@10/R@100 | Texas R@1/R@10/R@100 | Toshka R@1/R@10/R@100 | "
                     "Amazon R@1/R@10/R@100 | Napa R@1/R@10/R@100 | Gobi R@1/R@10/R@100 | Average R@1/R@10/R@100 |")
    assert md[3] == ("| earthloc2 (published) | 3072 | 84.4 / 94.2 / 98.4 | 83.8 / 92.6 / 97.5 | 91.4 / 96.6 / 99.1 | "
                     "78.7 / 89.0 / 95.3 | 85.7 / 93.8 / 98.3 | 78.9 / 92.0 / 97.5 | 83.8 / 93.0 / 97.7 |")
    assert md[4] == ("| earthloc (published, same table) | 4096 | n/a | n/a | n/a | n/a | n/a | n/a "
                     "| 57.1 / 74.4 / 88.9 |")
    kept = {a.area: a.n_queries for a in lite_run.areas}
    assert md[5] == "| kept queries | | " + " | ".join(str(kept[a]) for a in AREAS) + f" | {sum(kept.values())} |"
    table = _parse_csv(paper_csv(rows))
    lite = table["lite0-gem"]
    assert lite["descriptor_dim"] == "1280"
    for a in lite_run.areas:
        assert lite[f"{a.area}_queries"] == str(a.n_queries)
        assert lite[f"{a.area}_r@10"] == ("" if not a.n_queries else f"{a.recalls[10]:.2f}")
    assert table["earthloc2 (published)"]["average_r@1"] == "83.80"
    assert table["earthloc (published, same table)"]["gobi_r@1"] == ""


@pytest.mark.slow
def test_cli_models_writes_markdown_and_csv(official_dataset, lite_run, tmp_path):
    exe = Path(sys.executable).parent / "earthloc"
    md, table = tmp_path / "table.md", tmp_path / "table.csv"
    r = subprocess.run([str(exe), "eval", "official", "--dataset", str(official_dataset), "--models",
                        "lite0-gem,lite0-mixvpr", "--markdown", str(md), "--csv", str(table), "--published"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert md.read_text() in r.stdout + "\n"
    rows = _parse_csv(table.read_text())
    assert list(rows) == ["lite0-gem", "lite0-mixvpr"]  # no published figures for these two
    assert rows["lite0-mixvpr"]["descriptor_dim"] == "1024"
    expected = table_row("lite0-gem", 1280, lite_run)
    for a in AREAS:
        want = expected.per_area[a]
        got = [rows["lite0-gem"][f"{a}_r@{n}"] for n in (1, 10, 100)]
        assert got == (["", "", ""] if want is None else [f"{x:.2f}" for x in want])


def test_cli_models_bad_input_is_one_line_exit_2(official_dataset):
    exe = Path(sys.executable).parent / "earthloc"
    for args, needle in ((["--models", "lite0-gem,nope"], "error: nope: unknown model"),
                         (["--markdown", "t.md"], "error: --markdown/--csv/--published: need --models"),
                         (["--models", "lite0-gem,lite0-gem"], "error: --models: give distinct model names")):
        r = subprocess.run([str(exe), "eval", "official", "--dataset", str(official_dataset), *args],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith(needle), r.stderr

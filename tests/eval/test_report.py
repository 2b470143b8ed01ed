"""The report: table layout, figures and map files, from hand-made scores."""

from __future__ import annotations

import numpy as np
from PIL import Image

from earthloc.eval.photo_benchmark import MethodScore, PhotoOutcome
from earthloc.eval.report import markdown_table, official_table, outcome_class, write_report


def _score(name: str, curve: list[float], depth: int) -> MethodScore:
    outcomes = (
        PhotoOutcome("ISS050-E-70536", (36.4, 38.2), (36.3, 38.1), 1),
        PhotoOutcome("ISS052-E-10192", (51.9, 35.2), (40.0, 10.0), 4),
        PhotoOutcome("ISS050-E-35441", (-35.4, -72.5), (10.0, 80.0), None),
    )
    return MethodScore(name, "centre", np.array(curve, float), depth, outcomes, {"ISS047-E-99060": "no centre truth"})


def test_table_layout_and_na_cells():
    ref = _score("reference", [33.3] * 3 + [66.7] * 7, 10)
    ours = _score("ours", list(np.linspace(33.3, 100, 100)), 100)
    table = markdown_table([ref, ours]).splitlines()
    assert table[0] == "| Method | R@1 | R@5 | R@10 | R@20 | R@100 | photos scored | dropped |"
    assert table[2] == "| reference | 33.3 | 66.7 | 66.7 | n/a | n/a | 3 | 1 |"
    assert table[3].startswith("| ours | 33.3 |") and table[3].endswith("| 100.0 | 3 | 1 |")


def test_outcome_classes():
    assert [outcome_class(r) for r in (1, 2, 10, 11, None)] == ["hit@1", "hit@10", "hit@10", "miss", "miss"]


def test_write_report_files(tmp_path):
    ref = _score("reference", [33.3] * 3 + [66.7] * 7, 10)
    ours = _score("ours", list(np.linspace(33.3, 100, 100)), 100)
    paths = write_report(tmp_path / "r", {"centre rule": [ref, ours]}, ours, "earthloc eval photos --x",
                         notes=["a note"])
    names = sorted(p.name for p in paths)
    assert names == ["README.md", "map.html", "map.png", "recall_curves.png"]
    md = (tmp_path / "r" / "README.md").read_text()
    assert "## centre rule" in md and "earthloc eval photos --x" in md and "- a note" in md
    assert "ISS047-E-99060" in md  # dropped photos are listed
    for png in ("map.png", "recall_curves.png"):
        p = tmp_path / "r" / png
        assert p.stat().st_size < 500_000
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= 600
    html = (tmp_path / "r" / "map.html").read_text()
    assert html.count("ISS0") >= 3 and "leaflet" in html.lower()


def test_official_table_layout():
    from earthloc.eval.official import AreaResult, OfficialRun, Ranking

    empty = Ranking(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), np.zeros((0, 1), np.int64))
    def area(name, n, r):
        return AreaResult(name, tuple(f"q{i}" for i in range(n)), np.arange(3), empty, (), r, n, {})
    run = OfficialRun("d", "m", "db", False, 2021, (area("texas", 2, {1: 50.0, 10: 100.0, 100: 100.0}),
                                                      area("alps", 0, {1: 0.0, 10: 0.0, 100: 0.0})))
    lines = official_table([("lite0-gem, db", run)]).splitlines()
    assert lines[0] == "| Method | Texas R@1/R@10/R@100 | Alps R@1/R@10/R@100 |"
    assert lines[2] == "| lite0-gem, db | 50.0 / 100.0 / 100.0 | n/a |"
    assert lines[3] == "| kept queries | 2 | 0 |"

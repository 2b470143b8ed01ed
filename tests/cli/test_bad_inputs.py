"""Every subcommand on bad input: exit code 2, exactly one ``error: <input>: <problem>`` line on stderr,
no traceback, and no file left behind. One row per case: an option added later is covered by a row.

The CLI runs in-process (``earthloc.cli.main.run``, the console script's own error handling) in a fresh
working folder; placeholders in the arguments name real files: ``{photo}`` a real ISS photo,
``{index}`` a real small index, ``{tf}``/``{tm}`` copies of it with a truncated ``vectors.faiss`` /
``manifest.parquet``, ``{db}`` its DB folder, ``{file}`` a regular file, ``{dir}`` an empty folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from earthloc.cli.main import run

PH = "{photo} --nadir 36.5,40.5"
L = f"locate --index {{index}} {PH}"

# (arguments, words the error line must hold)
CASES: list[tuple[str, tuple[str, ...]]] = [
    # top level
    ("locat", ("no such command 'locat'", "locate")),
    ("--bogus", ("--bogus", "no such option")),
    # locate: usage
    (f"{L} --top 0", ("--top", "greater than or equal to 1")),
    (f"{L} --top abc", ("--top", "integer")),
    (f"{L} --bogus", ("--bogus", "no such option")),
    (f"locate {PH}", ("--index", "missing")),
    (f"{L} --ray-cpus 0", ("--ray-cpus",)),
    # locate: index
    (f"locate --index {{dir}} {PH}", ("not an index folder",)),
    (f"locate --index {{tf}} {PH}", ("vectors.faiss", "unreadable")),
    (f"locate --index {{tm}} {PH}", ("manifest.parquet", "unreadable")),
    (f"{L} --model nope", ("nope", "unknown model")),
    (f"{L} --checkpoint missing.pt", ("missing.pt", "not found")),
    (f"{L} --device cuda:7", ("--device", "cuda:7")),
    # locate: position and time
    ("locate --index {index} {photo} --nadir 95,0", ("--nadir", "not a valid")),
    ("locate --index {index} {photo} --nadir abc", ("--nadir", "LAT,LON")),
    ("locate --index {index} {photo} --time yesterday", ("--time", "ISO 8601")),
    ("locate --index {index} {photo} --time 2017-01-01", ("--time", "only a date")),
    ("locate --index {index} {photo} --time 2017-01-01T10:00:00Z --nadir 36.5,40.5", ("--nadir", "--time", "km")),
    (f"{L} --altitude 0", ("--altitude", "km")),
    (f"{L} --altitude -5", ("--altitude",)),
    (f"{L} --altitude 5000", ("--altitude", "km")),
    (f"{L} --max-off-nadir -1", ("max_off_nadir",)),
    (f"{L} --max-off-nadir 100", ("max_off_nadir",)),
    # locate: photos
    ("locate --index {index} nonexist.jpg --nadir 36.5,40.5", ("nonexist.jpg", "no such photo")),
    ("locate --index {index} --nadir 36.5,40.5", ("no photos given",)),
    ("locate --index {index} --metadata missing.csv", ("missing.csv", "no such file")),
    (f"{L} --refine --matcher bogus", ("bogus", "matcher")),
    # locate: outputs (checked before any work)
    (f"{L} --format xml", ("--format", "xml")),
    (f"{L} --out {{dir}}", ("is a folder",)),
    (f"{L} --out /proc/x.json", ("/proc/x.json", "kernel file system")),
    (f"{L} --out /sys/x.json", ("/sys/x.json", "kernel file system")),
    (f"{L} --out {{file}}/x.json", ("x.json", "is a file, not a folder")),
    (f"{L} --out out.xyz", ("out.xyz", "unknown output format")),
    (f"{L} --map {{dir}}", ("is a folder",)),
    (f"{L} --progress {{file}}/p.jsonl", ("p.jsonl", "not a folder")),
    (f"{L} --out /dev/full", ("/dev/full", "no space left")),
    # index
    ("index build --out o", ("--db", "missing")),
    ("index build --db nonexist --out o", ("nonexist", "not found")),
    ("index build --db {db} --out o --rotations x", ("--rotations",)),
    ("index build --db {db} --out o --precision x", ("--precision",)),
    ("index build --db {db} --out o --batch-size 0", ("--batch-size",)),
    ("index build --db {db} --out o --chunk 0", ("--chunk",)),
    ("index build --db {db} --out {file}", ("is a file",)),
    ("index build --db {db} --out o --model nope", ("nope", "unknown model")),
    ("index info nonexist", ("nonexist", "not an index folder")),
    ("index info {tf}", ("vectors.faiss", "unreadable")),
    ("index info {tm}", ("manifest.parquet", "unreadable")),
    ("index info", ("PATH", "missing")),
    ("index bogus", ("no such command 'bogus'",)),
    # db
    ("db build --out o", ("--source", "missing")),
    ("db build --source bogus:x --out o", ("--source",)),
    ("db build --source iss-mini --out {file}", ("is a file",)),
    ("db build --source iss-mini --out o --quality 150", ("--quality", "less than or equal to 100")),
    ("db build --source iss-mini --out o --quality 0", ("--quality", "greater than or equal to 1")),
    ("db build --source iss-mini --out o --size 0", ("--size",)),
    ("db build --source iss-mini --out o --size 9000", ("--size",)),
    ("db build --source iss-mini --out o --zooms a,b", ("--zooms", "integers")),
    ("db build --source iss-mini --out o --years 1800", ("1800", "not served")),
    ("db build --source eox --out o --years 1800 --region alps --dry-run", ("--years [1800]", "not served by EOX")),
    ("db build --source iss-mini --out o --region nowhere", ("nowhere",)),
    ("db build --source iss-mini --out o --places missing.txt", ("missing.txt", "not found")),
    ("db build --source iss-mini --out o --workers 0", ("--workers",)),
    ("db build --source iss-mini --out o --concurrency 0", ("--concurrency",)),
    ("db build --source iss-mini --out o --rate -1", ("--rate",)),
    ("db build --source iss-mini --out o --limit -1", ("--limit",)),
    ("db build --source iss-mini --out o --ray-batch 0", ("--ray-batch", "greater than or equal to 1")),
    ("db verify nonexist", ("nonexist", "not found")),
    ("db verify {db} --workers 0", ("--workers",)),
    ("db grid --zooms x", ("--zooms",)),
    ("db grid --region bbox:1,2", ("bbox:1,2",)),
    ("db grid --zooms 9 --region alps --out {dir}", ("is a folder",)),
    ("db grid --max-abs-lat 100", ("--max-abs-lat",)),
    ("db grid --min-land 2", ("--min-land",)),
    # model
    ("model info nope", ("nope", "unknown model")),
    ("model info lite0-gem --checkpoint missing.pt", ("missing.pt", "not found")),
    ("model bogus", ("no such command 'bogus'",)),
    # eval
    ("eval areas --queries missing.csv", ("missing.csv",)),
    ("eval official --dataset nonexist", ("nonexist", "not found")),
    ("eval official --dataset {dir} --k 0", ("--k",)),
    ("eval official --dataset {dir} --batch-size 0", ("--batch-size",)),
    ("eval photos --index nonexist --photos missing.csv", ("missing.csv",)),
    ("eval photos --index {index} --photos {queries} --rule bogus", ("--rule", "bogus")),
    # refine
    ("refine run --out o.jsonl --matcher bogus", ("bogus", "matcher")),
    ("refine calibrate --precision 2", ("--precision",)),
    ("refine report --out {dir}", ("RUNS", "missing")),
    # train
    ("train --db nonexist --out run1", ("nonexist", "not found")),
    ("train --db {file} --out run4", ("not found",)),
    ("train --db {db} --out run3 --epochs 0", ("--epochs",)),
    ("train --db {db} --out run2 --batch-regions 1", ("--batch-regions",)),
    ("train-eval --val-db nonexist", ("nonexist", "not found")),
    ("train-data --out td --sources bogus", ("bogus", "unknown training source")),
    # serve
    ("serve --index {index} --port 70000", ("--port", "65535")),
    ("serve --index {index} --port 0", ("--port",)),
    ("serve --index {index} --port abc", ("--port", "integer")),
    ("serve --index nonexist", ("nonexist", "not an index folder")),
    # demo
    ("demo --top 0", ("--top",)),
]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def places(small_index, broken_indexes, shared_data, tmp_path, monkeypatch) -> dict[str, str]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "file").write_text("a regular file\n")
    (work / "dir").mkdir()
    monkeypatch.chdir(work)
    return {"photo": str(shared_data / "iss_mini" / "queries" / "ISS050-E-70536.jpg"),
            "queries": str(shared_data / "iss_mini" / "queries.csv"),
            "index": str(small_index), "db": str(small_index.parent / "db"),
            "tf": str(broken_indexes["tf"]), "tm": str(broken_indexes["tm"]),
            "file": str(work / "file"), "dir": str(work / "dir")}


def test_the_table_is_large_and_covers_every_subcommand():
    assert len(CASES) >= 60
    firsts = {args.split()[0] for args, _ in CASES}
    assert {"locate", "index", "db", "model", "eval", "refine", "train", "train-eval", "train-data", "serve",
            "demo"} <= firsts


@pytest.mark.parametrize("args, words", CASES, ids=[a for a, _ in CASES])
def test_bad_input_is_one_error_line(args, words, places, capsys):
    work = Path.cwd()
    watched = [work, Path(places["index"]).parent]
    before = [_files(w) for w in watched]
    code = run([a.format(**places) for a in args.split()])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert [_files(w) for w in watched] == before  # nothing written, not even half-way


EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


def test_console_script_exit_code_and_full_stdout(places):
    """The installed script (not in-process): usage error exit 2; results piped into a full disk is an
    error line, not a silent exit 0."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([EARTHLOC, "locate", "--top", "0", places["photo"]], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1
    with open("/dev/full", "w") as full:
        res = subprocess.run([EARTHLOC, "index", "info", places["index"]], stdout=full, stderr=subprocess.PIPE,
                             text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == ["error: standard output: no space left on the device (nothing written)"]


def test_refused_connection_is_one_line_at_once(tmp_path, monkeypatch, capsys):
    """A tile service that refuses connections (nothing listens on the port) stops `db build` at once
    with the reason, not after minutes of silent retries."""
    import socket
    import time

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "places.txt").write_text("12_1162_2524\n")
    t = time.monotonic()
    code = run(["db", "build", "--source", f"wmts:http://127.0.0.1:{port}/tiles/{{year}}/{{z}}/{{x}}/{{y}}.jpg",
                "--years", "2018", "--places", "places.txt", "--out", "db", "--tile-cache", "cache"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - t < 20
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and f"cannot connect to 127.0.0.1:{port}" in lines[0] and "Traceback" not in err

"""`earthloc locate --out` resumes only what is still valid: a progress record is reused when the photo
bytes, its position, the options, the index and the model are all the same, and recomputed otherwise;
a repeated MRF keeps its own row; places outside the index and tiny photos are error rows (exit 1).
Real ISS photos on a real small index (DB images of the iss_mini Iraq z10 context)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC
from pathlib import Path

import pytest
from PIL import Image

from earthloc.cli.main import run

MRFS = ("ISS050-E-70536", "ISS055-E-27330", "ISS052-E-43456")
NADIRS = {"ISS050-E-70536": (34.0, 42.0), "ISS055-E-27330": (33.5, 43.0), "ISS052-E-43456": (35.0, 41.0)}


@pytest.fixture()
def batch(shared_data, tmp_path):
    """Three real photos copied into a folder with a CSV of their nadirs (over Iraq, inside the index)."""
    for mrf in MRFS:
        shutil.copy(shared_data / "iss_mini" / "queries" / f"{mrf}.jpg", tmp_path / f"{mrf}.jpg")
    return tmp_path


def _csv(folder: Path, nadirs: dict[str, tuple[float, float]], rows=MRFS) -> Path:
    p = folder / "photos.csv"
    p.write_text("path,nadir_lat,nadir_lon\n" + "".join(f"{m}.jpg,{nadirs[m][0]},{nadirs[m][1]}\n" for m in rows))
    return p


def _locate(index: Path, csv: Path, out: Path, *extra: str) -> int:
    return run(["locate", str(csv), "--index", str(index), "--out", str(out), *extra])


def _progress(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.with_name(out.name + ".progress.jsonl").read_text().splitlines()]


def test_resume_recomputes_exactly_the_photos_whose_inputs_changed(small_index, batch, capsys):
    out = batch / "res.json"
    csv = _csv(batch, NADIRS)
    assert _locate(small_index, csv, out, "--top", "5") == 0
    assert [r["mrf"] for r in _progress(out)] == list(MRFS)
    first = out.read_bytes()

    prog = out.with_name(out.name + ".progress.jsonl")
    with open(prog, "a") as f:
        f.write('{"mrf": "ISS05')  # a kill mid-write: a torn last line
    assert _locate(small_index, csv, out, "--top", "5") == 0  # nothing changed: nothing redone
    assert len(_progress(out)) == 3 and out.read_bytes() == first  # and the torn line is gone

    moved = {**NADIRS, "ISS055-E-27330": (33.0, 44.5)}  # a fixed nadir: that photo only
    capsys.readouterr()
    assert _locate(small_index, _csv(batch, moved), out, "--top", "5") == 0
    rows = _progress(out)
    assert [r["mrf"] for r in rows[3:]] == ["ISS055-E-27330"] and rows[3]["nadir"] == [33.0, 44.5]
    assert "1 photo(s) recomputed" in capsys.readouterr().err
    res = {r["mrf"]: r for r in json.loads(out.read_text())}
    assert res["ISS055-E-27330"]["nadir"] == [33.0, 44.5]

    img = Image.open(batch / "ISS052-E-43456.jpg")  # the same photo, other bytes (re-encoded)
    img.save(batch / "ISS052-E-43456.jpg", quality=60)
    assert _locate(small_index, _csv(batch, moved), out, "--top", "5") == 0
    assert [r["mrf"] for r in _progress(out)[4:]] == ["ISS052-E-43456"]

    assert _locate(small_index, _csv(batch, moved), out, "--top", "3") == 0  # another option: all of them
    rows = _progress(out)
    assert sorted(r["mrf"] for r in rows[5:]) == sorted(MRFS) and all(len(r["candidates"]) == 3 for r in rows[5:])
    assert all(len(r["candidates"]) == 3 for r in json.loads(out.read_text()))


def test_a_repeated_mrf_keeps_both_rows(small_index, batch):
    out = batch / "res.json"
    p = batch / "twice.csv"
    p.write_text("path,nadir_lat,nadir_lon\nISS050-E-70536.jpg,34.0,42.0\nISS050-E-70536.jpg,33.0,44.5\n")
    assert _locate(small_index, p, out) == 0
    res = json.loads(out.read_text())
    assert [r["nadir"] for r in res] == [[34.0, 42.0], [33.0, 44.5]]  # each row its own result
    assert len(_progress(out)) == 2


def test_a_place_outside_the_index_and_a_tiny_photo_are_error_rows(small_index, batch, capsys):
    Image.open(batch / "ISS050-E-70536.jpg").resize((1, 1)).save(batch / "tiny.jpg")
    p = batch / "odd.csv"
    p.write_text("path,nadir_lat,nadir_lon\nISS055-E-27330.jpg,-30.0,-60.0\ntiny.jpg,34.0,42.0\n"
                 "ISS052-E-43456.jpg,35.0,41.0\n")
    out = batch / "res.json"
    capsys.readouterr()
    assert _locate(small_index, p, out) == 1
    res = json.loads(out.read_text())
    assert "does not cover this place" in res[0]["error"] and res[0]["candidates"] == []
    assert "1x1 px is too small" in res[1]["error"]
    assert res[2]["error"] is None and res[2]["candidates"]
    assert "1/3 photos localized" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_mid_batch_with_refinement_then_resume_is_exact(small_index, shared_data, tmp_path):
    """`locate --refine` killed with SIGKILL after its first records, then rerun: the final output is
    byte-identical to an uninterrupted run, and the photos done before the kill are not redone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    exe = str(Path(sys.executable).with_name("earthloc"))
    photos = sorted((shared_data / "iss_mini" / "queries").glob("*.jpg"))[:6]
    csv = tmp_path / "p.csv"
    csv.write_text("path,nadir_lat,nadir_lon\n" + "".join(f"{p},{34 + 0.3 * i},{42 - 0.2 * i}\n"
                                                          for i, p in enumerate(photos)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cmd(out: Path) -> list[str]:
        return [exe, "locate", str(csv), "--index", str(small_index), "--out", str(out), "--top", "2",
                "--refine", "--matcher", "orb"]

    whole = tmp_path / "whole.json"
    assert subprocess.run(cmd(whole), env=env, capture_output=True, timeout=900).returncode == 0
    out = tmp_path / "killed.json"
    progress = out.with_name(out.name + ".progress.jsonl")
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists()  # killed before its output
    done = [json.loads(ln)["mrf"] for ln in progress.read_text().splitlines() if ln.endswith("}")]
    assert 2 <= len(done) < 6
    assert subprocess.run(cmd(out), env=env, capture_output=True, timeout=900).returncode == 0
    assert out.read_bytes() == whole.read_bytes()
    rows = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.endswith("}")]
    assert sorted(r["mrf"] for r in rows[len(done):]) == sorted(p.stem for p in photos if p.stem not in done)


def test_metadata_nadir_and_time_that_disagree_are_an_error_row(small_index, batch, capsys):
    from datetime import datetime

    from earthloc.geo.visibility import iss_state

    when = "2017-02-25T10:20:30Z"
    st = iss_state(datetime(2017, 2, 25, 10, 20, 30, tzinfo=UTC))
    p = batch / "both.csv"
    p.write_text(f"path,nadir_lat,nadir_lon,time\nISS050-E-70536.jpg,34.0,42.0,{when}\n"
                 f"ISS055-E-27330.jpg,{st.lat + 0.5:.4f},{st.lon:.4f},{when}\n")
    out = batch / "res.json"
    _locate(small_index, p, out)
    res = json.loads(out.read_text())
    far = res[0]["error"]
    assert "ISS050-E-70536" in far and "km from the ISS nadir" in far and "tolerance 150 km" in far
    assert "km from the ISS nadir" not in (res[1]["error"] or "")  # 55 km apart: within the tolerance


@pytest.mark.slow
def test_kill_9_mid_index_build_then_resume_is_exact(small_index, tmp_path):
    """`index build` killed with SIGKILL after its first chunk, then rerun: the index equals an
    uninterrupted build's byte for byte (the kill came with at least one chunk on disk)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    exe = str(Path(sys.executable).with_name("earthloc"))
    db = small_index.parent / "db"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cmd(out: Path) -> list[str]:
        return [exe, "index", "build", "--db", str(db), "--out", str(out), "--chunk", "4", "--batch-size", "4"]

    whole = tmp_path / "whole"
    assert subprocess.run(cmd(whole), env=env, capture_output=True, timeout=900).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(".partial-*/*.npy")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "index.json").exists()
    kept = {p.name: p.read_bytes() for p in out.glob(".partial-*/*.npy")}
    assert kept
    assert subprocess.run(cmd(out), env=env, capture_output=True, timeout=900).returncode == 0
    for name in ("vectors.faiss", "manifest.parquet"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()

"""Output files never replace what is not ours: links are written through, devices and FIFOs are streamed
to, ``-`` is standard output, a failed write leaves the old file and no temp file (earthloc.atomic)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from earthloc.atomic import atomic_path, check_writable, write_text
from earthloc.errors import InputError


def test_symlink_is_written_through(tmp_path):
    (tmp_path / "real.json").write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert (tmp_path / "real.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "sub" / "made.json")
    write_text(link, "x")
    assert link.is_symlink() and (tmp_path / "sub" / "made.json").read_text() == "x"


def test_fifo_is_streamed_to_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text(fifo, "through the pipe\n")
    reader.join(30)
    assert got == ["through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_character_devices_stay_devices():
    write_text("/dev/null", "nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(InputError, match="/dev/full: no space left"):
        write_text("/dev/full", "x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dash_is_standard_output(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text("-", "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert not (tmp_path / "-").exists()


def test_existing_mode_is_kept(tmp_path):
    p = tmp_path / "out.csv"
    p.write_text("old")
    p.chmod(0o640)
    write_text(p, "new")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.read_text() == "new"


@pytest.mark.parametrize("where, words", [
    ("{tmp}", "is a folder"),
    ("{tmp}/file/x.json", "a parent of it is a file"),
    ("/proc/x.json", "kernel file system"),
    ("/proc/self/x.json", "kernel file system"),
])
def test_unwritable_targets_are_refused_before_any_work(tmp_path, where, words):
    (tmp_path / "file").write_text("mine")
    path = where.format(tmp=tmp_path)
    with pytest.raises(InputError, match=words):
        check_writable(path)
    with pytest.raises(InputError, match=words):
        write_text(path, "x")
    assert (tmp_path / "file").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["out.json"]


def test_a_full_disk_is_an_error_naming_the_file(tmp_path):
    """A file-size limit makes the write fail like a full disk would (EFBIG): one error naming the
    file, the old content kept, no temp file left."""
    p = tmp_path / "big.json"
    p.write_text("old")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from earthloc.atomic import write_text\n"
        "from earthloc.errors import InputError\n"
        "try:\n"
        f"    write_text({str(p)!r}, 'x' * 100_000)\n"
        "except InputError as err:\n"
        "    print(err)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.stdout.startswith(f"{p}: cannot write it: File too large"), res.stdout + res.stderr
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["big.json"]

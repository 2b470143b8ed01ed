"""Safe output files: write a temp file in the same folder, then rename, so nothing is left half-written,
and never replace what is not a file of ours.

Rules for every output path (:func:`atomic_path`):

- ``-`` is standard output;
- a symbolic link is written through: its target gets the new content, the link stays;
- an existing character device or FIFO (``/dev/null``, ``/dev/stdout``, a named pipe) is streamed to,
  never replaced by a regular file; a folder, block device or socket is refused;
- an existing file keeps its permission bits; a new one gets what ``open()`` would give (0666 & ~umask);
- every failure (no such folder, a file where a folder should be, no permission, a read-only or full
  disk) is an :class:`~earthloc.errors.InputError` naming the path, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from earthloc.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

STDOUT = "-"
# errors of the write itself (not of reading some input inside the ``with`` block)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _problem(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device (nothing written)"
    return f"cannot write it: {err.strerror or type(err).__name__}"


def is_stream(path: str | os.PathLike) -> bool:
    """Whether writing ``path`` streams (``-``, an existing character device or FIFO) rather than
    making a file: no progress or side files belong beside such a target."""
    if str(path) == STDOUT:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def target_of(path: str | os.PathLike) -> Path:
    """The regular file that writing ``path`` makes or replaces: symbolic links followed; InputError
    for a folder or another non-regular target, or a parent that is not a folder."""
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise InputError(path, "a parent of it is a file, not a folder") from None
    except OSError as err:
        raise InputError(path, _problem(err)) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise InputError(path, "is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(path, "is not a regular file (a device or socket); give a file name")
    return real


_KERNEL_FS = ("/proc", "/sys")  # root "may write" there, yet no file can be made


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, before any work, if ``path`` cannot be written (see :func:`target_of`; its nearest
    existing folder must be a writable folder of a real file system). Creates nothing."""
    if is_stream(path):
        return
    real = target_of(path)
    folder = real.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(path, f"{folder} is a file, not a folder")
    resolved = os.path.realpath(folder)
    if any(resolved == k or resolved.startswith(k + "/") for k in _KERNEL_FS):
        raise InputError(path, f"{resolved} is a kernel file system, not a place for files")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write it: folder {folder} is not writable")


@contextlib.contextmanager
def _streamed(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file for the content, copied to the stream (stdout, device, FIFO) once complete."""
    fd, name = tempfile.mkstemp(prefix=".earthloc-out.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            with open(tmp, "rb") as src:
                if str(path) == STDOUT:
                    sys.stdout.flush()
                    shutil.copyfileobj(src, sys.stdout.buffer)
                    sys.stdout.buffer.flush()
                else:
                    with open(path, "wb") as dst:  # a device or FIFO: no truncation, no rename
                        shutil.copyfileobj(src, dst)
        except OSError as err:
            raise InputError(path, _problem(err)) from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path for the content of ``path``; on success it becomes ``path`` (see the module
    rules), on error it is deleted and ``path`` is untouched.

    >>> with atomic_path("out.json") as tmp:
    ...     tmp.write_text("{}")
    """
    if is_stream(path):
        with _streamed(path) as tmp:
            yield tmp
        return
    check_writable(path)
    real = target_of(path)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except FileExistsError:
        raise InputError(path, "a parent of it is a file, not a folder") from None
    except OSError as err:
        raise InputError(path, "a parent of it is a file, not a folder" if err.errno == errno.ENOTDIR
                         else _problem(err)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno in _WRITE_ERRNOS:
                raise InputError(path, _problem(err)) from None
            raise
        try:
            mode = stat.S_IMODE(os.stat(real).st_mode) if real.exists() else _FILE_MODE
            os.chmod(tmp, mode)  # mkstemp makes 0600 files: keep the old file's mode, or what open() gives
            os.replace(tmp, real)
        except OSError as err:
            raise InputError(path, _problem(err)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``-``: standard output)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``-``: standard output)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

"""Atomic file replacement: temp file in the same folder, fsync, rename, fsync the folder.

A power cut or crash at any point leaves either the old file or the new one under ``path``, never a torn one: the
data is written to a sibling temp file and flushed to disk before ``os.replace`` swaps it in (a rename within one
filesystem is atomic), and the folder is flushed after it so the rename itself survives. Adapted states, tables,
run directories, reports and whole bundle folders (:func:`atomic_rename_folder`) are written through
it. Standard library only, in the root package like :mod:`metaedge.errors`, so the device side (runtime, devices)
and the server side (sdk, export, knowledge) share this one implementation without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import ExistsError

#: the permissions ``open(path, "w")`` would give a new file (temp files are owner-only), read once at import
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Replace ``path`` atomically with what ``write(f)`` writes into the open binary file ``f``.

    ``write`` must only write to ``f`` (e.g. ``lambda f: np.savez(f, theta=theta)``); if it raises, the temp file
    is removed, ``path`` is untouched and the exception propagates. The file gets the permissions a plainly
    written one would (:data:`FILE_MODE`). Returns ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` atomically with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` atomically with ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_rename_folder(staged: str | Path, out: str | Path) -> Path:
    """Make the folder ``staged`` (a sibling of ``out``, holding plain files) appear as ``out`` in one step: its
    files are flushed to disk, then it is renamed. Refuses (:class:`ExistsError`) when ``out`` exists.

    (A rename onto an existing empty folder would succeed on POSIX, hence the check; the window between the check
    and the rename is the caller's to keep free, as for any output path.)
    """
    staged, out = Path(staged), Path(out)
    if out.exists() or out.is_symlink():
        raise ExistsError(f"{out} already exists; remove it or choose another output path")
    for f in staged.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(staged)
    os.rename(staged, out)
    fsync_dir(out.parent)
    return out

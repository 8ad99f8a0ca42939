"""Atomic file replacement on the server: temp file in the same folder, fsync, rename, fsync the folder.

Run directories (config, weights, optimizer state) and bundles are written through it, so a crash or a full disk
leaves the old file or the new one, never a torn one. The device side has its twin in ``metaedge.runtime.atomic``
(the layering forbids sdk and runtime importing each other); both keep the same signature.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import ExistsError

#: the permissions ``open(path, "w")`` would give a new file (temp files are owner-only), read once at import
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Replace ``path`` atomically with what ``write(f)`` writes into the open binary file ``f``.

    If ``write`` raises, the temp file is removed, ``path`` is untouched and the exception propagates. The file
    gets the permissions a plainly written one would (:data:`FILE_MODE`). Returns ``path``.
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
    _fsync_dir(path.parent)
    return path


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
    _fsync_dir(staged)
    os.rename(staged, out)
    _fsync_dir(out.parent)
    return out


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` atomically with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` atomically with ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened or fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

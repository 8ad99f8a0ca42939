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
    try:  # flush the rename itself; some platforms and filesystems cannot open or fsync a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` atomically with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` atomically with ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))

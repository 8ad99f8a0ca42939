"""Reading bundles: a directory holding ``manifest.json`` and the files it lists with their sha256.

A bundle is data, never code: JSON, ONNX graphs and ``.npy`` arrays read with ``allow_pickle=False``.
Every file is hash-checked before use; anything unexpected is one clear ``BundleError``.
This module must not import torch, onnx or ``metaedge.sdk``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError, ManifestError
from .manifest import FORMAT_VERSION, Manifest

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "ManifestError", "sha256", "unpack"]


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    """A verified bundle directory."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Read ``manifest.json``, check its format version and every listed file's sha256.

        ``path`` is a bundle directory or a zip of one (unpacked into a private temporary directory, refusing
        entries that would land outside it).
        """
        path = Path(path)
        if not path.exists():
            raise BundleError(f"{path} does not exist; pass the bundle directory or .zip that `metaedge export` wrote")
        if not path.is_file():
            return cls._verified(path)
        unpacked = unpack(path)
        try:
            bundle = cls._verified(unpacked)
        except BaseException:
            shutil.rmtree(_temporary_root(unpacked), ignore_errors=True)
            raise
        # the private copy lives as long as the Bundle (and is removed at exit at the latest)
        weakref.finalize(bundle, shutil.rmtree, _temporary_root(unpacked), True)
        return bundle

    @classmethod
    def _verified(cls, path: Path) -> Bundle:
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise BundleError(f"{path} is not a bundle: it has no manifest.json; export one with `metaedge export`")
        try:
            data = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{manifest_path} is not valid JSON ({e}); re-export the bundle") from e
        try:
            manifest = Manifest.parse(data)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from e
        for name, digest in manifest.files.items():
            file = (path / name).resolve()
            if path.resolve() not in file.parents:
                raise BundleError(f"{path}: manifest names {name!r} outside the bundle; refusing to read it")
            if not file.is_file():
                raise BundleError(f"{path}: {name} is missing; copy the whole bundle or re-export it")
            if sha256(file) != digest:
                raise BundleError(f"{path}: {name} does not match its sha256 in manifest.json; the bundle is corrupt "
                                  "or was modified, re-export it")
        return cls(path, manifest)

    def file(self, name: str) -> Path:
        """Path of a listed (and verified) file."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.path}: manifest.json lists no {name}; re-export the bundle")
        return self.path / name

    def array(self, name: str) -> np.ndarray:
        """A verified ``.npy`` array (never unpickled)."""
        try:
            return np.load(self.file(name), allow_pickle=False)
        except ValueError as e:
            raise BundleError(f"{self.path}: {name} is not a plain numeric array ({e}); re-export the bundle") from e


def _temporary_root(unpacked: Path) -> Path:
    """The directory :func:`unpack` created for ``unpacked`` (the bundle may sit one level below it)."""
    return unpacked if unpacked.name.startswith(TEMP_PREFIX) else unpacked.parent


TEMP_PREFIX = "metaedge-bundle-"


def unpack(archive: Path) -> Path:
    """Extract a zipped bundle into a new temporary directory; refuses path traversal and non-zip files."""
    target = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                dest = (target / info.filename).resolve()
                if info.filename.startswith("/") or target.resolve() not in dest.parents:
                    raise BundleError(f"{archive}: entry {info.filename!r} would be written outside the bundle; "
                                      "refusing this archive")
                if info.is_dir():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    out.write(src.read())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        shutil.rmtree(target, ignore_errors=True)
        raise BundleError(f"{archive} is neither a bundle directory nor a readable zip ({e}); re-export it") from e
    except BundleError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    inner = [p for p in target.iterdir() if p.is_dir()]
    return inner[0] if not (target / "manifest.json").exists() and len(inner) == 1 else target

"""Reading bundles: a directory holding ``manifest.json`` and the files it lists with their sha256.

A bundle is data, never code: JSON, ONNX graphs and ``.npy`` arrays read with ``allow_pickle=False``.
Every file is hash-checked before use; anything unexpected is one clear ``BundleError``.
This module must not import torch, onnx or ``metaedge.sdk``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import BundleError, ManifestError
from .manifest import FORMAT_VERSION, Manifest

if TYPE_CHECKING:
    from .signing import TrustedKey

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
    def open(cls, path: str | Path, trust: Iterable[str | Path | TrustedKey] | None = None) -> Bundle:
        """Read ``manifest.json``, check its signature where keys are trusted, its format version and every listed
        file's sha256.

        ``path`` is a bundle directory or a zip of one (unpacked within the limits of :func:`unpack` into a private
        temporary directory). ``trust``: public keys (``.pub`` paths from ``metaedge keygen``) the bundle must be
        signed by; None: the keys listed in ``METAEDGE_TRUST``; no keys at all: no signature is required (see
        :mod:`metaedge.runtime.signing`).
        """
        path = Path(path)
        if not path.exists():
            raise BundleError(f"{path} does not exist; pass the bundle directory or .zip that `metaedge export` wrote")
        if not path.is_file():
            return cls._verified(path, trust)
        unpacked = unpack(path)
        try:
            bundle = cls._verified(unpacked, trust, source=path)
        except BaseException:
            shutil.rmtree(_temporary_root(unpacked), ignore_errors=True)
            raise
        # the private copy lives as long as the Bundle (and is removed at exit at the latest)
        weakref.finalize(bundle, shutil.rmtree, _temporary_root(unpacked), True)
        return bundle

    @classmethod
    def _verified(cls, path: Path, trust: Iterable[str | Path | TrustedKey] | None = None,
                  source: Path | None = None) -> Bundle:
        where = source or path  # a zip's name in messages, not its private copy's
        manifest_path = path / "manifest.json"
        if manifest_path.is_symlink():
            raise BundleError(f"{where}: manifest.json is a symbolic link; bundles hold plain files only, so copy the "
                              "bundle with links resolved (cp -rL) or re-export it")
        if not manifest_path.is_file():
            raise BundleError(f"{where} is not a bundle: it has no manifest.json; export one with `metaedge export`")
        raw = _read_bounded(manifest_path, MAX_MANIFEST_BYTES, where)
        _check_signature(path, raw, trust, where)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{where}: manifest.json is not valid JSON ({e}); re-export the bundle") from e
        try:
            manifest = Manifest.parse(data)
        except ManifestError as e:
            raise ManifestError(f"{where}: {e}") from e
        for name, digest in manifest.files.items():
            if sha256(_listed_file(path, name, where)) != digest:
                raise BundleError(f"{where}: {name} does not match its sha256 in manifest.json; the bundle is corrupt "
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


#: what a zipped bundle may unpack to; real bundles are far smaller (an MLP's is ~100 KB, a Conv4's a few MB).
#: Raise these module constants for unusually large models.
MAX_ENTRIES = 1000
MAX_FILE_BYTES = 128 << 20
MAX_TOTAL_BYTES = 256 << 20
#: largest uncompressed / compressed size of one entry, enforced once it exceeds RATIO_FREE_BYTES (a constant
#: ``rates.npy`` legitimately deflates ~1000:1, but only a bomb does so at many MB)
MAX_RATIO = 100
RATIO_FREE_BYTES = 8 << 20
#: largest manifest.json read (real ones are a few KB to a few hundred KB)
MAX_MANIFEST_BYTES = 8 << 20
_CHUNK = 1 << 20
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: general-purpose flags a bundle's entries may carry: deflate level hints, data descriptor, UTF-8 names (not
#: encryption, patched data or strong encryption, which zipfile cannot read)
_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800


def _read_bounded(path: Path, limit: int, where: Path) -> bytes:
    """The bytes of ``path``, refusing files over ``limit`` bytes without reading past it."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
        raise BundleError(f"{where}: {path.name} is larger than {size}, far beyond any real bundle's; refusing to "
                          "read it")
    return data


def _check_signature(path: Path, manifest: bytes, trust: Iterable[str | Path | TrustedKey] | None,
                     where: Path) -> None:
    """Verification hook: with trusted keys configured, ``manifest`` (the exact bytes of manifest.json) must carry
    a valid ``manifest.sig`` by one of them. Without keys nothing is imported (no ``cryptography`` needed)."""
    from . import signing

    keys = signing.trusted_keys(trust)
    if not keys:
        return
    signing.verify_manifest(where, manifest, signing.signature_bytes(path, where), keys)


def _unsafe_name(name: str) -> bool:
    """A name that could leave the bundle directory: absolute, with ``..``, a drive, a backslash or a NUL."""
    parts = PurePosixPath(name).parts
    return (not parts or name.startswith("/") or ".." in parts or "\\" in name or "\x00" in name
            or ":" in parts[0])


def _listed_file(path: Path, name: str, where: Path) -> Path:
    """The file ``name`` listed in the manifest of the bundle directory ``path``: inside it, a plain file, no link
    (a link could later point the verified name at another file)."""
    if _unsafe_name(name):
        raise BundleError(f"{where}: manifest names {name!r} outside the bundle; refusing to read it")
    try:
        part = path
        for piece in PurePosixPath(name).parts:
            part = part / piece
            if part.is_symlink():
                raise BundleError(f"{where}: {name} is a symbolic link; bundles hold plain files only, so copy the "
                                  "bundle with links resolved (cp -rL) or re-export it")
        file = path / name
        if path.resolve() not in file.resolve().parents:
            raise BundleError(f"{where}: manifest names {name!r} outside the bundle; refusing to read it")
        if not file.is_file():
            raise BundleError(f"{where}: {name} is missing; copy the whole bundle or re-export it")
    except OSError as e:  # e.g. a name too long for this filesystem
        raise BundleError(f"{where}: {name!r} cannot be read ({e}); re-export the bundle") from e
    return file


def _checked_entries(archive: Path, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name, after refusing (from the central directory, before anything is written) too
    many entries, unsafe or duplicate names, links, encrypted or unusual compression, and declared sizes over the
    limits. The declared sizes may lie: :func:`_copy` counts again while streaming."""
    if len(infos) > MAX_ENTRIES:
        raise BundleError(f"{archive} holds {len(infos)} entries, more than the {MAX_ENTRIES} a bundle may "
                          "(metaedge.runtime.bundle.MAX_ENTRIES); refusing this archive")
    entries: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise BundleError(f"{archive}: entry {name!r} would be written outside the bundle; refusing this archive")
        if name.casefold() in folded:
            raise BundleError(f"{archive}: entry {name!r} appears twice (names differing only in case count as "
                              "the same); refusing this ambiguous archive")
        folded.add(name.casefold())
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"{archive}: entry {name!r} is a symbolic link; bundles hold plain files only, "
                              "refusing this archive")
        if (info.flag_bits & ~_FLAGS or info.compress_type not in _METHODS
                or info.extract_version > zipfile.MAX_EXTRACT_VERSION):
            raise BundleError(f"{archive}: entry {name!r} is encrypted or uses zip features bundles do not (flags "
                              f"{info.flag_bits:#x}, compression method {info.compress_type}, version "
                              f"{info.extract_version}); re-zip it stored or deflated, e.g. with "
                              "`metaedge export -o NAME.zip`")
        _check_size(archive, name, info.file_size, info.compress_size)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"{archive} would unpack to more than {MAX_TOTAL_BYTES >> 20} MiB "
                              "(metaedge.runtime.bundle.MAX_TOTAL_BYTES); refusing this archive")
        entries[name] = info
    return entries


def _check_size(archive: Path, name: str, size: int, compressed: int) -> None:
    """Refuse an entry that unpacks (or has unpacked so far) to ``size`` bytes from ``compressed``."""
    if size > MAX_FILE_BYTES:
        raise BundleError(f"{archive}: entry {name!r} unpacks to more than {MAX_FILE_BYTES >> 20} MiB "
                          f"(metaedge.runtime.bundle.MAX_FILE_BYTES); refusing this archive")
    if size > RATIO_FREE_BYTES and size > MAX_RATIO * max(compressed, 1):
        raise BundleError(f"{archive}: entry {name!r} unpacks to {size / max(compressed, 1):.0f} times its "
                          f"compressed size (at most {MAX_RATIO} allowed beyond {RATIO_FREE_BYTES >> 20} MiB, "
                          "metaedge.runtime.bundle.MAX_RATIO); refusing this likely zip bomb")


def _copy(archive: Path, src: BinaryIO, info: zipfile.ZipInfo, out: BinaryIO | None, budget: list[int],
          limit: int) -> bytes:
    """Stream one entry into ``out`` (or into the returned bytes when ``out`` is None) in chunks, counting the bytes
    against the entry's declared size, the limits and ``budget`` (``[bytes left of MAX_TOTAL_BYTES]``)."""
    kept, written = [], 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        budget[0] -= len(chunk)
        if written > info.file_size:
            raise BundleError(f"{archive}: entry {info.filename!r} unpacks to more than its header declares; "
                              "refusing this tampered archive")
        _check_size(archive, info.filename, written, info.compress_size)
        if written > limit or budget[0] < 0:
            raise BundleError(f"{archive}: entry {info.filename!r} exceeds the size limits "
                              "(metaedge.runtime.bundle.MAX_*_BYTES); refusing this archive")
        if out is None:
            kept.append(chunk)
        else:
            out.write(chunk)
    return b"".join(kept)


def _listed_names(manifest: bytes) -> list[str]:
    """The file names a manifest lists; [] when it is malformed (:meth:`Bundle._verified` says what is wrong)."""
    try:
        files = json.loads(manifest).get("files", {})
        return [n for n in files if isinstance(n, str)] if isinstance(files, dict) else []
    except (ValueError, AttributeError):  # invalid JSON or UTF-8, or not an object
        return []


def unpack(archive: Path) -> Path:
    """Extract a zipped bundle into a new temporary directory and return the bundle directory in it.

    Only ``manifest.json``, ``manifest.sig`` and the files the manifest lists are extracted, the manifest first
    (bounded by :data:`MAX_MANIFEST_BYTES`). The whole archive is refused, with the temporary directory removed,
    when it holds more than :data:`MAX_ENTRIES` entries, names outside the bundle or twice, symbolic links, or
    entries over :data:`MAX_FILE_BYTES` / :data:`MAX_TOTAL_BYTES` / :data:`MAX_RATIO` (declared or streamed).
    """
    from .signing import SIGNATURE_FILE

    target = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        with zipfile.ZipFile(archive) as z:
            entries = _checked_entries(archive, z.infolist())
            found = [n for n in entries if PurePosixPath(n).name == "manifest.json" and n.count("/") <= 1]
            prefix = "" if "manifest.json" in entries else found[0][:-len("manifest.json")] if len(found) == 1 else None
            if prefix is None:
                raise BundleError(f"{archive} holds {'no' if not found else 'more than one'} manifest.json at its top "
                                  "(or in one folder); zip a bundle directory that `metaedge export` wrote")
            budget = [MAX_TOTAL_BYTES]
            with z.open(entries[prefix + "manifest.json"]) as src:
                manifest = _copy(archive, src, entries[prefix + "manifest.json"], None, budget, MAX_MANIFEST_BYTES)
            (target / "manifest.json").write_bytes(manifest)
            for name in dict.fromkeys([SIGNATURE_FILE, *_listed_names(manifest)]):
                info = entries.get(prefix + name)
                if info is None or info.is_dir() or name == "manifest.json":
                    continue  # a listed file the archive lacks is reported by Bundle._verified
                dest = target / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "xb") as out:
                    _copy(archive, src, info, out, budget, MAX_FILE_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
            UnicodeDecodeError, BundleError) as e:
        # NotImplementedError: zipfile's word for a zip feature it lacks; UnicodeDecodeError: a name flagged UTF-8
        # that is not
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{archive} is neither a bundle directory nor a readable zip ({e}); re-export it") from e
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target

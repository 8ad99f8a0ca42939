"""What ``kb register`` reads from a run directory or a bundle (torch-free: JSON and hashes only).

A run's id is the sha256 hex of its ``config.json`` bytes. Its data hashes: the sha256 of every file a family
option names (the ``table`` family's ``path``, a data folder's files), and, for families that generate their tasks
(sinusoid, sensors), a digest of the generator's settings (family, options, seed) named ``generated:<family>``.

A bundle is read through :meth:`metaedge.runtime.bundle.Bundle.open` (every file's sha256 checked, the signature
verified where keys are trusted); its id is the sha256 hex of ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.bundle import Bundle
from ..runtime.signing import signing_key_id
from ..runtime.state import BundleIdentity
from .errors import KnowledgeError
from .rows import DataFile

#: largest config.json read; a real one is a few KB
MAX_CONFIG_BYTES = 4 << 20
#: most files hashed under one data folder an option names
MAX_DATA_FILES = 10_000


@dataclass(frozen=True)
class RunFiles:
    """A run directory as the knowledge base records it."""

    id: str
    path: str
    algo: str | None
    family: str | None
    config: dict[str, Any]
    data: tuple[DataFile, ...]


def read_run(run_dir: str | Path) -> RunFiles:
    """Hash a run directory's ``config.json`` and the data it names."""
    folder = Path(run_dir).resolve()
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise KnowledgeError(f"{run_dir} has no config.json, so it is not a run directory; pass the --out folder of "
                             "`metaedge train` (or a bundle directory)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise KnowledgeError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes, so it is not a metaedge "
                             "config.json; pass a run directory written by `metaedge train`")
    raw = config_path.read_bytes()
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KnowledgeError(f"{config_path} is not valid JSON ({e}); restore it or register another run") from e
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict):
        raise KnowledgeError(f"{config_path} has no 'train' object, so `metaedge train` did not write it; register "
                             "a run directory it wrote")
    family, algo = train.get("family"), train.get("algo")
    options = train.get("family_options") or {}
    if not isinstance(options, dict):
        raise KnowledgeError(f"{config_path}: train.family_options must be an object; restore the file")
    data = tuple(_data_files(folder, family, options, train.get("seed")))
    return RunFiles(hashlib.sha256(raw).hexdigest(), str(folder), algo if isinstance(algo, str) else None,
                    family if isinstance(family, str) else None, config, data)


def _data_files(run: Path, family: Any, options: dict[str, Any], seed: Any) -> Iterator[DataFile]:
    found = False
    for key, value in sorted(options.items()):
        if not isinstance(value, str) or not value:
            continue
        target = next((p for p in (Path(value).expanduser(), run / value, run.parent / value) if p.exists()), None)
        if target is None:
            continue
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        if len(files) > MAX_DATA_FILES:
            raise KnowledgeError(f"family option {key}={value} names a folder with more than {MAX_DATA_FILES} files; "
                                 "point it at the data files themselves")
        for f in files:
            found = True
            name = f"{key}={value}" if f == target else f"{key}={value}/{f.relative_to(target).as_posix()}"
            yield DataFile(name, _sha256_file(f), f.stat().st_size)
    if not found:  # tasks generated from settings: the settings are the data
        settings = json.dumps({"family": family, "options": options, "seed": seed}, sort_keys=True).encode()
        yield DataFile(f"generated:{family}", hashlib.sha256(settings).hexdigest(), None)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleFiles:
    """A verified bundle as the knowledge base records it."""

    id: str
    path: str
    run_path: str
    algo: str
    task_kind: str
    family: dict[str, Any]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_units: tuple[str, ...]
    output_units: tuple[str, ...]
    signing_key_id: str | None
    created: str


def read_bundle(bundle_dir: str | Path) -> BundleFiles:
    """Verify a bundle (directory or zip) and read its identity and interface."""
    bundle = Bundle.open(bundle_dir)
    m = bundle.manifest
    return BundleFiles(BundleIdentity.of(bundle.path).manifest_sha256.hex(), str(Path(bundle_dir).resolve()),
                       m.provenance.run, m.algo,
                       m.task_kind, dict(m.family), tuple(m.input.names), tuple(m.output.names),
                       tuple(m.input.units), tuple(m.output.units), signing_key_id(bundle.path),
                       m.provenance.created)

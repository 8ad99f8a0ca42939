"""What the knowledge base answers with: frozen rows, never raw dicts.

Matrices are tuples of float tuples in physical units: ``support_x`` ``(k, n_inputs)``, ``support_y``
``(k, n_outputs)``, check ``x`` ``(m, n_inputs)``, ``reference`` / ``predicted`` ``(m, n_outputs)``. Times are
ISO 8601 UTC strings. ``to_dict`` gives the JSON form ``kb ... --json`` prints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Matrix = tuple[tuple[float, ...], ...]


def _jsonable(value: Any) -> Any:
    """``asdict`` output made JSON-safe: non-finite floats as None, paths as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class _Row:
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class AdaptationRow(_Row):
    """One stored adaptation (from an :class:`~metaedge.runtime.journal_records.AdaptationRecord`)."""

    record_id: str
    unit: str
    bundle_id: str
    device: str  # host id
    time: str
    support_x: Matrix
    support_y: Matrix
    steps_kept: int
    loss_before: float  # nan: not finite on the device
    loss_after: float
    state_sha256: str | None
    steps_run: int | None = None
    start_state_sha256: str | None = None  # the state a recalibration continued from


@dataclass(frozen=True)
class CheckRow(_Row):
    """One stored batch of in-service check readings."""

    record_id: str
    unit: str
    bundle_id: str
    time: str
    x: Matrix
    reference: Matrix
    predicted: Matrix
    state_sha256: str | None


@dataclass(frozen=True)
class UnitSummary(_Row):
    """A unit's counts: adaptations and check records, its latest record's time, its latest adaptation's bundle."""

    unit: str
    n_adaptations: int
    n_checks: int
    last_time: str
    last_bundle: str | None


@dataclass(frozen=True)
class UnitDetail(_Row):
    """A unit with all its records, oldest first."""

    summary: UnitSummary
    adaptations: tuple[AdaptationRow, ...]
    checks: tuple[CheckRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "adaptations": [a.to_dict() for a in self.adaptations],
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class DataFile(_Row):
    """One input a run was trained from: ``name`` (``option=path`` or ``generated:family``), its sha256 hex, and
    the bytes hashed (None for generated data, whose digest covers the generator's settings)."""

    name: str
    sha256: str
    size: int | None


@dataclass(frozen=True)
class RunInfo(_Row):
    """A registered training run: id = sha256 hex of its ``config.json`` bytes."""

    id: str
    path: str
    algo: str | None
    family: str | None
    registered: str
    data: tuple[DataFile, ...]


@dataclass(frozen=True)
class BundleInfo(_Row):
    """A registered bundle: id = sha256 hex of its ``manifest.json`` bytes.

    ``run_id`` is None while the run in the manifest's provenance (``run_path``) is not registered.
    """

    id: str
    path: str
    run_id: str | None
    run_path: str
    algo: str
    task_kind: str
    family: dict[str, Any]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    signing_key_id: str | None
    created: str
    registered: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class BundleLineage(_Row):
    """One bundle in a lineage: its id, its registration (None: records name it but it is not registered), its
    run (None: not registered) and how many adaptations and units of the lineage used it."""

    bundle_id: str
    bundle: BundleInfo | None
    run: RunInfo | None
    n_adaptations: int
    n_units: int


@dataclass(frozen=True)
class Lineage(_Row):
    """unit -> adaptations -> bundles -> runs -> data (``unit`` set), or bundle -> run -> data (``unit`` None)."""

    ref: str
    unit: str | None
    adaptations: tuple[AdaptationRow, ...]
    bundles: tuple[BundleLineage, ...]


@dataclass(frozen=True)
class FileIngest(_Row):
    """What one journal file added: new records, records already stored (same ``record_id``), and torn last lines
    skipped (a JSON Lines append cut short on the device; the record was never complete)."""

    path: str
    added: int
    duplicates: int
    torn_lines: int = 0


@dataclass(frozen=True)
class IngestResult(_Row):
    """Per-file counts of one ``ingest`` call."""

    files: tuple[FileIngest, ...]

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)


@dataclass(frozen=True)
class EvaluationRow(_Row):
    """A stored candidate-vs-champion evaluation and the decision taken."""

    id: int
    candidate: str
    champion: str
    figures: dict[str, Any]
    decision: str
    time: str


@dataclass(frozen=True)
class AlertRow(_Row):
    """A drift alert: the unit, the detector that raised it, its evidence; ``closed`` None while open."""

    id: int
    unit: str
    detector: str
    evidence: dict[str, Any]
    opened: str
    closed: str | None

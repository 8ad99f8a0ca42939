"""What a device journals: typed records of adaptations and in-service checks (stdlib only).

A device appends one :class:`AdaptationRecord` per adaptation and one :class:`CheckRecord` per batch of
in-service check readings; the knowledge base ingests them (``metaedge kb ingest``). Both storage formats hold the
same JSON object per record (``to_json``): an SQLite journal on Linux devices (:mod:`.journal`) and JSON Lines from
firmware (``me_journal_format`` in the C library). ``record_id`` is the idempotency key: ingesting a record twice
adds nothing.

Every value is in physical units (the bundle's input and output units). Records from untrusted journals are read
with :meth:`parse`, which names the first missing or wrong field in one sentence.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .errors import BundleError

#: the ``schema`` field every record carries; a reader refuses any other
SCHEMA = "metaedge.journal/1"
#: most support or check rows one record may hold (a calibration has a handful; anything larger is not ours)
MAX_ROWS = 10_000


class JournalError(BundleError):
    """A journal or journal record that is malformed, truncated or not a metaedge journal."""


@dataclass(frozen=True)
class DeviceInfo:
    """Where a record was made: the device profile (``cpu-x86_64``, ``cortex-m4``, ...) and a host id."""

    profile: str | None
    host_id: str


@dataclass(frozen=True)
class BundleRef:
    """Which bundle: sha256 hex of its ``manifest.json`` bytes, and the key id that signed it (None: unsigned)."""

    manifest_sha256: str
    signing_key_id: str | None = None


@dataclass(frozen=True)
class AdaptationRecord:
    """One adaptation of one unit.

    ``support_x`` ``(k, n_inputs)`` and ``support_y`` ``(k, n_outputs)`` are the reference points in physical
    units; ``state_sha256`` is the sha256 hex of the adapted state file written (None if none was written);
    ``start_state_sha256`` that of the state it continued from (a recalibration), else None.
    """

    record_id: str
    unit: str
    device: DeviceInfo
    bundle: BundleRef
    time: str  # ISO 8601, UTC
    support_x: tuple[tuple[float, ...], ...]
    support_y: tuple[tuple[float, ...], ...]
    steps_run: int
    steps_kept: int
    loss_before: float
    loss_after: float
    state_sha256: str | None = None
    start_state_sha256: str | None = None
    kind: ClassVar[str] = "adaptation"

    def to_json(self) -> str:
        return _dump(self)


@dataclass(frozen=True)
class CheckRecord:
    """In-service check readings of one unit: the reference values beside the adapted model's predictions.

    ``x`` ``(m, n_inputs)``, ``reference`` and ``predicted`` ``(m, n_outputs)``, physical units; ``state_sha256``
    names the adapted state that predicted.
    """

    record_id: str
    unit: str
    device: DeviceInfo
    bundle: BundleRef
    time: str
    x: tuple[tuple[float, ...], ...]
    reference: tuple[tuple[float, ...], ...]
    predicted: tuple[tuple[float, ...], ...]
    state_sha256: str | None = None
    kind: ClassVar[str] = "check"

    def to_json(self) -> str:
        return _dump(self)


Record = AdaptationRecord | CheckRecord
_KINDS: dict[str, type] = {"adaptation": AdaptationRecord, "check": CheckRecord}


def _dump(record: Record) -> str:
    """One line of JSON: ``schema``, ``kind``, then the fields (non-finite losses as null)."""
    body = asdict(record)
    for key in ("loss_before", "loss_after"):
        if key in body and not math.isfinite(body[key]):
            body[key] = None
    return json.dumps({"schema": SCHEMA, "kind": record.kind, **body}, separators=(",", ":"), allow_nan=False)


def parse_record(text: str | bytes, where: str = "journal record") -> Record:
    """A record from one JSON object (a JSON Lines line or an SQLite journal row); :class:`JournalError` naming
    the first missing or wrong field otherwise."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JournalError(f"{where} is not valid JSON ({e}); the journal is damaged") from e
    except RecursionError:  # arrays nested thousands deep: no record is
        raise JournalError(f"{where} nests JSON too deeply to be a journal record; the journal is damaged") from None
    if not isinstance(data, dict):
        raise JournalError(f"{where} is not a JSON object; the journal is damaged")
    if data.get("schema") != SCHEMA:
        raise JournalError(f"{where} has schema {data.get('schema')!r}, not {SCHEMA!r}; it is not a metaedge journal "
                           "record or is newer than this metaedge")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise JournalError(f"{where} has kind {kind!r}; expected one of {', '.join(_KINDS)}")
    return _Reader(where).record(_KINDS[kind], data)


def _finite(v: int | float) -> bool:
    """A JSON number that is a finite float (an integer beyond float's range is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


@dataclass
class _Reader:
    where: str
    fields: dict[str, Any] = field(default_factory=dict)

    def fail(self, name: str, what: str) -> JournalError:
        return JournalError(f"{self.where}: field {name} {what}; the journal is damaged or not from metaedge")

    def get(self, data: dict, name: str, required: bool = True) -> Any:
        if name not in data or data[name] is None:
            if required:
                raise self.fail(name, "is missing")
            return None
        return data[name]

    def text(self, data: dict, name: str, required: bool = True) -> str | None:
        v = self.get(data, name, required)
        if v is not None and (not isinstance(v, str) or not v or len(v) > 512):
            raise self.fail(name, "must be a non-empty string of at most 512 characters")
        return v

    def integer(self, data: dict, name: str) -> int:
        v = self.get(data, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(name, "must be a non-negative integer")
        return v

    def number(self, data: dict, name: str) -> float:
        v = data.get(name)
        if v is None:
            return math.nan  # a loss that was not finite on the device
        if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
            raise self.fail(name, "must be a finite number or null")
        return float(v)

    def matrix(self, data: dict, name: str, rows: int | None = None) -> tuple[tuple[float, ...], ...]:
        v = self.get(data, name)
        ok = isinstance(v, list) and 0 < len(v) <= MAX_ROWS and all(
            isinstance(r, list) and r and len(r) == len(v[0]) and all(
                not isinstance(c, bool) and isinstance(c, int | float) and _finite(c) for c in r) for r in v)
        if not ok:
            raise self.fail(name, f"must be a non-empty list of at most {MAX_ROWS} equal-length rows of finite "
                                  "numbers")
        if rows is not None and len(v) != rows:
            raise self.fail(name, f"must have {rows} rows, one per input row")
        return tuple(tuple(float(c) for c in r) for r in v)

    def record(self, cls: type, data: dict) -> Record:
        device = self.get(data, "device")
        bundle = self.get(data, "bundle")
        if not isinstance(device, dict):
            raise self.fail("device", "must be an object")
        if not isinstance(bundle, dict):
            raise self.fail("bundle", "must be an object")
        common = dict(
            record_id=self.text(data, "record_id"), unit=self.text(data, "unit"),
            device=DeviceInfo(self.text(device, "profile", required=False), self.text(device, "host_id")),
            bundle=BundleRef(self.text(bundle, "manifest_sha256"), self.text(bundle, "signing_key_id", False)),
            time=self.text(data, "time"), state_sha256=self.text(data, "state_sha256", required=False))
        if cls is AdaptationRecord:
            x = self.matrix(data, "support_x")
            return AdaptationRecord(**common, support_x=x, support_y=self.matrix(data, "support_y", len(x)),
                                    steps_run=self.integer(data, "steps_run"),
                                    steps_kept=self.integer(data, "steps_kept"),
                                    loss_before=self.number(data, "loss_before"),
                                    loss_after=self.number(data, "loss_after"),
                                    start_state_sha256=self.text(data, "start_state_sha256", required=False))
        x = self.matrix(data, "x")
        return CheckRecord(**common, x=x, reference=self.matrix(data, "reference", len(x)),
                           predicted=self.matrix(data, "predicted", len(x)))

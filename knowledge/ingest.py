"""Journals into the knowledge base: idempotent, one transaction per journal file.

A file is read whole (through :func:`metaedge.runtime.journal.read_journal`, bounded) before anything is written,
so a malformed record anywhere in it stores nothing from that file. Its records are then written in ONE
transaction with ``INSERT ... ON CONFLICT (record_id) DO NOTHING``: a record already stored (the same file ingested
again, overlapping journals, a retry after a crash) is counted as a duplicate and changes nothing. Units, devices
and deployments (bundle on device, first/last seen) are upserted in the same transaction.

Every key is written in sorted order (units, devices, adaptations, checks, deployments), so concurrent ingests on
PostgreSQL take their row locks in one global order and cannot deadlock; on SQLite the writer takes the write lock
at BEGIN (:mod:`.db`) and concurrent ingests queue for it.

A record whose bundle is not registered is stored with its bundle id all the same (bundles may be registered
later; :mod:`.schema` keeps no foreign key there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, case

from ..runtime.journal_records import AdaptationRecord, CheckRecord, Record
from .rows import FileIngest
from .schema import adaptations, checks, deployments, devices, units

#: most records one journal file may hold: a device writes a handful a day; far more is not a journal of ours
MAX_RECORDS_PER_FILE = 5_000_000


def now() -> str:
    """The current UTC time, ISO 8601 (what ``registered``/``ingested`` columns hold)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def ingest_file(engine: Engine, path: str | Path, max_records: int = MAX_RECORDS_PER_FILE) -> FileIngest:
    """Store the records of one journal file (SQLite or JSON Lines) in one transaction on ``engine`` (a writer,
    :func:`.db.writer`)."""
    from ..runtime.journal import read_journal  # J's reader: the one way journals are read

    records = list(read_journal(path, max_records=max_records))  # whole file first: a bad record stores nothing
    with engine.begin() as conn:
        added = store_records(conn, records, source=str(path))
    return FileIngest(str(path), added, len(records) - added)


def store_records(conn: Connection, records: Sequence[Record], source: str) -> int:
    """Write ``records`` inside the caller's transaction; returns how many were new."""
    stamp = now()
    _upsert_seen(conn, units, ("name",), _spans(records, lambda r: (r.unit,)))
    profiles = {(r.device.host_id,): r.device.profile for r in records}  # the file's latest profile per device
    _upsert_seen(conn, devices, ("host_id",), _spans(records, lambda r: (r.device.host_id,)),
                 extra=lambda key: {"profile": profiles[key]})
    added = _insert_new(conn, adaptations, [_adaptation(r, source, stamp) for r in records
                                             if isinstance(r, AdaptationRecord)])
    added += _insert_new(conn, checks, [_check(r, source, stamp) for r in records if isinstance(r, CheckRecord)])
    _upsert_seen(conn, deployments, ("bundle_id", "host_id"),
                 _spans(records, lambda r: (r.bundle.manifest_sha256, r.device.host_id)))
    return added


def _spans(records: Iterable[Record], key: Callable[[Record], tuple]) -> dict[tuple, tuple[str, str]]:
    """First and last record time per key."""
    spans: dict[tuple, tuple[str, str]] = {}
    for r in records:
        k = key(r)
        first, last = spans.get(k, (r.time, r.time))
        spans[k] = (min(first, r.time), max(last, r.time))
    return spans


def _upsert_seen(conn: Connection, table: Table, keys: tuple[str, ...], spans: dict[tuple, tuple[str, str]],
                 extra: Callable[[tuple], dict[str, Any]] | None = None) -> None:
    """Insert each key with its first/last seen, or widen the stored span (keys in sorted order)."""
    if not spans:
        return
    stmt = insert(conn, table)
    new = stmt.excluded
    update = {"first_seen": case((new.first_seen < table.c.first_seen, new.first_seen), else_=table.c.first_seen),
              "last_seen": case((new.last_seen > table.c.last_seen, new.last_seen), else_=table.c.last_seen)}
    if "profile" in table.c:
        update["profile"] = new.profile
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
    rows = [{**dict(zip(keys, key)), "first_seen": first, "last_seen": last, **(extra(key) if extra else {})}
            for key, (first, last) in sorted(spans.items())]
    conn.execute(stmt, rows)


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose record_id is not stored yet (sorted by it); returns how many were inserted."""
    if not rows:
        return 0
    rows.sort(key=lambda row: row["record_id"])
    stmt = insert(conn, table).on_conflict_do_nothing(index_elements=["record_id"]).returning(table.c.record_id)
    return len(conn.execute(stmt, rows).all())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _common(r: Record, source: str, stamp: str) -> dict[str, Any]:
    return {"record_id": r.record_id, "unit": r.unit, "host_id": r.device.host_id,
            "bundle_id": r.bundle.manifest_sha256, "signing_key_id": r.bundle.signing_key_id, "time": r.time,
            "state_sha256": r.state_sha256, "source": source, "ingested": stamp}


def _adaptation(r: AdaptationRecord, source: str, stamp: str) -> dict[str, Any]:
    return {**_common(r, source, stamp), "support_x": [list(row) for row in r.support_x],
            "support_y": [list(row) for row in r.support_y], "n_points": len(r.support_x),
            "steps_run": r.steps_run, "steps_kept": r.steps_kept, "loss_before": _finite(r.loss_before),
            "loss_after": _finite(r.loss_after), "start_state_sha256": r.start_state_sha256}


def _check(r: CheckRecord, source: str, stamp: str) -> dict[str, Any]:
    return {**_common(r, source, stamp), "x": [list(row) for row in r.x],
            "reference": [list(row) for row in r.reference], "predicted": [list(row) for row in r.predicted],
            "n_points": len(r.x)}

"""The device's journal: append-only storage of :mod:`.journal_records` (stdlib + numpy only).

Two formats hold the same JSON object per record (``docs/journal.md``):

* **SQLite** (Linux devices; any path not ending in ``.jsonl``/``.ndjson``): table
  ``records(seq INTEGER PRIMARY KEY, record_id TEXT UNIQUE NOT NULL, json TEXT NOT NULL)`` in WAL mode with
  ``synchronous=FULL``, one transaction per append, triggers that refuse UPDATE and DELETE. A kill -9 or power cut
  loses at most the append in flight; every committed record survives whole (SQLite's WAL commit is atomic and
  durable once ``COMMIT`` returns).
* **JSON Lines** (``.jsonl``/``.ndjson``; what firmware emits with ``me_journal_format``): one record per line,
  appended with a single ``os.write`` of the whole line and an ``fsync``. A cut mid-write can leave only a torn
  last line (no newline): the reader skips it with a warning count, and the next :func:`append` cuts it off before
  writing, so a torn fragment never fuses with a later record.

    append("journal.db", record)
    for record in read_journal("journal.db"):
        ...

Reading is bounded (:data:`MAX_RECORD_BYTES` a record, ``max_records`` in all); a malformed record raises
:class:`~.journal_records.JournalError` naming the file and its line or row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..atomic import fsync_dir
from ..errors import InputError
from .journal_records import JournalError, Record, parse_record

_log = logging.getLogger("metaedge.runtime")

#: suffixes that select the JSON Lines format; any other path is an SQLite journal
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
#: the longest record (one JSON line or SQLite row) read: 10,000 support rows of a few floats fit easily
MAX_RECORD_BYTES = 8 << 20
#: default bound of :func:`read_journal`
MAX_RECORDS = 1_000_000
#: seconds an append waits for another writer's lock before it fails
BUSY_TIMEOUT_S = 10.0
#: ``PRAGMA application_id`` of SQLite journals ("MEJL"), so ``file`` and readers can tell them from other DBs
APPLICATION_ID = 0x4D454A4C
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, record_id TEXT UNIQUE NOT NULL, "
    "json TEXT NOT NULL)",
    # append-only: history is never rewritten on the device (the knowledge base relies on it)
    "CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records "
    "BEGIN SELECT RAISE(ABORT, 'metaedge journals are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records "
    "BEGIN SELECT RAISE(ABORT, 'metaedge journals are append-only'); END",
)


# --- what a record says about where and when -------------------------------------------------------------------

def new_record_id() -> str:
    """A fresh idempotency key: a uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """Now, ISO 8601 in UTC with milliseconds, e.g. ``2026-12-01T09:42:01.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_id(root: str | Path = "/") -> str:
    """A stable, non-reversible id of this machine: 16 hex digits of the sha256 of ``/etc/machine-id`` (salted
    with ``metaedge:``, so the raw id, which systemd asks to keep private, never leaves the device), or of the
    host name where there is no machine id."""
    try:
        secret = (Path(root) / "etc" / "machine-id").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        secret = ""
    source = f"machine-id:{secret}" if secret else f"hostname:{socket.gethostname()}"
    return hashlib.sha256(f"metaedge:{source}".encode()).hexdigest()[:16]


def unit_id(unit: str | None) -> str:
    """``unit`` checked as a record's unit id (1 to 512 characters, not blank); :class:`InputError` otherwise."""
    if not isinstance(unit, str) or not unit.strip() or len(unit) > 512:
        got = f"{len(unit)} characters" if isinstance(unit, str) and len(unit) > 512 else repr(unit)
        raise InputError(f"journaling needs the unit's id, 1 to 512 characters (unit=..., --unit ID), got {got}")
    return unit


def as_rows(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """``(n, d)`` (or ``(n,)``: one column) float32 values as record rows, each the shortest decimal that reads
    back as the same float32 (``0.1``, not ``0.10000000149011612``)."""
    a = np.asarray(a, np.float32)
    a = a.reshape(len(a), -1) if a.ndim != 2 else a
    return tuple(tuple(float(str(v)) for v in row) for row in a)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (a saved state's digest in records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- writing ---------------------------------------------------------------------------------------------------

def is_json_lines(path: str | Path) -> bool:
    """Whether :func:`append` writes ``path`` as JSON Lines (by its suffix) rather than SQLite."""
    return Path(path).suffix.lower() in JSON_LINES_SUFFIXES


def append(path: str | Path, record: Record) -> None:
    """Append ``record`` durably to the journal at ``path`` (created if absent).

    SQLite: one transaction; a record whose ``record_id`` is already there adds nothing (appending is
    idempotent). JSON Lines: one ``os.write`` + ``fsync`` under an exclusive ``flock`` (duplicates are left to
    the reader's idempotency key). Raises :class:`JournalError` when ``path`` is not a metaedge journal.
    """
    path = Path(path)
    line = record.to_json()
    try:
        if is_json_lines(path):
            _append_line(path, (line + "\n").encode("utf-8"))
        else:
            _append_sqlite(path, record.record_id, line)
    except OSError as e:  # permissions, a folder in the way, a full disk: the device's problem, not a bug
        raise JournalError(f"cannot append to journal {path} ({e.strerror or e}); check that it is a file in a "
                           "writable folder and that the disk is not full") from e


def _append_sqlite(path: Path, record_id: str, line: str) -> None:
    created = not path.exists()
    if not created:
        _require_sqlite(path)
    try:
        db = _connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # the WAL is synced at every commit: a commit survives power loss
            with db:  # BEGIN ... COMMIT (rolled back on error)
                if created or not _has_records_table(db):
                    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    for sql in _SCHEMA_SQL:
                        db.execute(sql)
                db.execute("INSERT OR IGNORE INTO records (record_id, json) VALUES (?, ?)", (record_id, line))
        finally:
            db.close()
    except sqlite3.Error as e:
        raise JournalError(f"cannot append to journal {path} ({e}); check that it is a metaedge SQLite journal, "
                           "that the folder is writable and the disk not full") from e
    if created:
        fsync_dir(path.parent)


def _append_line(path: Path, data: bytes) -> None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # serialises appenders, so the torn-tail check below sees a quiet file
        size = os.fstat(fd).st_size
        if size and os.pread(fd, len(_SQLITE_MAGIC), 0) == _SQLITE_MAGIC:
            raise JournalError(f"{path} is an SQLite journal, not JSON Lines; append to it under a name without "
                               "the .jsonl suffix, or choose another file")
        if size and os.pread(fd, 1, size - 1) != b"\n":
            keep = _last_line_end(fd, size)
            _log.warning("journal %s: cut off a torn last line of %d bytes (an append interrupted by a crash)", path,
                         size - keep)
            os.ftruncate(fd, keep)
        written = os.write(fd, data)  # one write of the whole line: a crash leaves all of it or a torn tail
        if written != len(data):
            raise JournalError(f"could not append to journal {path}: only {written} of {len(data)} bytes were "
                               "written; free disk space and retry")
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if size == 0:
        fsync_dir(path.parent)


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last ``\\n`` of the file (0 if none within :data:`MAX_RECORD_BYTES` of the end)."""
    start = max(0, size - MAX_RECORD_BYTES - 1)
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        raise JournalError(f"the last {size - start} bytes of the journal hold no line break; it is not a JSON "
                           "Lines journal")
    return start + cut + 1


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions only where `with db` opens them; the busy timeout waits out other writers
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return db


def _has_records_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone() is not None


def _require_sqlite(path: Path) -> None:
    # empty: another process has just created it and not yet written SQLite's header (its first append is running)
    if path.stat().st_size and _sniff(path) != "sqlite":
        raise JournalError(f"{path} exists but is not an SQLite journal; name JSON Lines journals *.jsonl, or choose "
                           "another file")


# --- reading ---------------------------------------------------------------------------------------------------

def _sniff(path: Path) -> str:
    """``sqlite`` (by the file's magic) or ``jsonl``."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise JournalError(f"cannot read journal {path} ({e.strerror or e}); check the file and its permissions") \
            from e
    return "sqlite" if head == _SQLITE_MAGIC else "jsonl"


class JournalReading(Iterator[Record]):
    """The records of one journal, in the order they were appended (an iterator, read lazily).

    ``torn_lines`` counts torn last lines skipped (JSON Lines; known once the iteration has ended)."""

    def __init__(self, path: Path, max_records: int) -> None:
        self.path = path
        self.max_records = max_records
        self.torn_lines = 0
        self._records = self._sqlite() if _sniff(path) == "sqlite" else self._lines()

    def __next__(self) -> Record:
        return next(self._records)

    def _limit(self, n: int) -> None:
        if n > self.max_records:
            raise JournalError(f"journal {self.path} holds more than {self.max_records} records; split it or read it "
                               "with a larger max_records")

    def _lines(self) -> Iterator[Record]:
        n = 0
        with open(self.path, "rb") as f:  # _sniff has just opened it
            for number, line in enumerate(iter(lambda: f.readline(MAX_RECORD_BYTES + 1), b""), 1):
                if not line.endswith(b"\n"):
                    if len(line) > MAX_RECORD_BYTES:
                        raise JournalError(f"journal {self.path}, line {number} is longer than {MAX_RECORD_BYTES} "
                                           "bytes; it is not a metaedge journal record")
                    self.torn_lines += 1  # only the last line can lack its newline: an append cut short
                    _log.warning("journal %s: skipped a torn last line (line %d, %d bytes, no newline)", self.path,
                                 number, len(line))
                    break
                if not line.strip():
                    continue
                n += 1
                self._limit(n)
                yield parse_record(line, f"journal {self.path}, line {number}")

    def _sqlite(self) -> Iterator[Record]:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path} ({e}); check the file and its permissions") from e
        db.text_factory = bytes  # decoded here: a damaged file's invalid UTF-8 becomes a JournalError, not a crash
        try:
            try:
                if not _has_records_table(db):
                    raise JournalError(f"{self.path} is an SQLite database without a records table, so it is not a "
                                       "metaedge journal")
                rows = db.execute("SELECT seq, record_id, length(CAST(json AS BLOB)), "
                                  f"CASE WHEN length(CAST(json AS BLOB)) <= {MAX_RECORD_BYTES} "
                                  "THEN CAST(json AS BLOB) END FROM records ORDER BY seq")
                for n, (seq, record_id, size, text) in enumerate(rows, 1):
                    self._limit(n)
                    where = f"journal {self.path}, row {seq}"
                    if not isinstance(text, bytes):
                        raise JournalError(f"{where} holds a record of {size} bytes, more than {MAX_RECORD_BYTES} "
                                           "or none; the journal is damaged or not from metaedge")
                    record = parse_record(text, where)
                    if isinstance(record_id, bytes):
                        record_id = record_id.decode("utf-8", "replace")
                    if record.record_id != record_id:
                        raise JournalError(f"{where}: its record_id column {record_id!r} differs from the record's "
                                           f"{record.record_id!r}; the journal was altered")
                    yield record
            except (sqlite3.Error, UnicodeDecodeError) as e:  # the latter: SQLite's message quotes garbage bytes
                raise JournalError(f"journal {self.path} is damaged or not a metaedge journal ({e})") from e
        finally:
            db.close()


def read_journal(path: str | Path, max_records: int = MAX_RECORDS) -> JournalReading:
    """The records of the journal at ``path`` (SQLite or JSON Lines, told apart by the file's first bytes), read
    lazily and bounded: at most ``max_records`` records of at most :data:`MAX_RECORD_BYTES` each.

    Raises :class:`JournalError` naming the file and line or row of the first malformed record, or when the file
    is missing or not a journal. A torn last JSON line is skipped (``.torn_lines`` counts it, and a warning is
    logged)."""
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"journal {path} does not exist or is not a file; pass the file a device wrote")
    return JournalReading(path, max_records)

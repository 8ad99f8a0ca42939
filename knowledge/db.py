"""Where the knowledge base lives and how to connect to it.

``--db URL`` wins, else ``$METAEDGE_KB``, else ``sqlite:///kb.db`` in the current folder. SQLite is the default;
``postgresql://...`` (read as ``postgresql+psycopg://``, psycopg 3) serves a fleet that outgrows one machine.

Every SQLite connection gets WAL (readers never block the one writer), a long busy timeout and foreign keys on;
write transactions start with ``BEGIN IMMEDIATE``, so concurrent ingests queue for the write lock instead of
failing with "database is locked" when a read transaction tries to upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import KnowledgeError

ENV = "METAEDGE_KB"
DEFAULT_URL = "sqlite:///kb.db"
#: how long an SQLite writer waits for the write lock (ms): 8 ingesting processes queue well within it
BUSY_TIMEOUT_MS = 120_000
#: execution option that marks an engine whose transactions write (``BEGIN IMMEDIATE`` on SQLite)
WRITE_OPTION = "metaedge_write"


def resolve_url(url: str | None = None) -> str:
    """The database URL: ``url``, else ``$METAEDGE_KB``, else ``sqlite:///kb.db`` (in the current folder)."""
    chosen = url or os.environ.get(ENV) or DEFAULT_URL
    for plain in ("postgresql://", "postgres://"):
        if chosen.startswith(plain):
            chosen = "postgresql+psycopg://" + chosen[len(plain):]
    try:
        parsed = make_url(chosen)
    except ArgumentError as e:
        raise KnowledgeError(f"--db {chosen!r} is not a database URL ({e}); pass e.g. sqlite:///kb.db or "
                             "postgresql://user@host/db") from e
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise KnowledgeError(f"--db {chosen!r} names a {parsed.get_backend_name()} database; the knowledge base "
                             "runs on SQLite (sqlite:///kb.db) or PostgreSQL (postgresql://user@host/db)")
    return chosen


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL or an in-memory SQLite database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (already resolved) with the SQLite pragmas on every connection."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        # autocommit at the driver level: SQLAlchemy's "begin" hook below then issues BEGIN itself
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock at BEGIN on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})

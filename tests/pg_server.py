"""A throwaway PostgreSQL server for the knowledge-base tests and benchmarks (Debian's ``postgresql`` package).

``PostgresServer.start()`` runs ``initdb`` and ``pg_ctl`` in a new temporary folder as a non-root user (PostgreSQL
refuses to run as root: as root the folder is handed to the ``postgres`` system user, or ``nobody``, and the tools
run through ``runuser``), listening on 127.0.0.1 on a free port with trust authentication; ``stop()`` shuts it
down and removes the folder. ``unavailable()`` says in one line why no server can be started here (None: it can).

``scripts/install_postgres.sh`` installs the package; ``.ci/run`` then sets ``METAEDGE_REQUIRE_SERVICES=1`` and the
tests fail instead of skipping when the server does not start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "metaedge"  # the database superuser initdb creates


def required() -> bool:
    """True where ``.ci/run`` installed the services and they must work."""
    return os.environ.get("METAEDGE_REQUIRE_SERVICES") == "1"


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, or the folder of an ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _os_user() -> str | None:
    """The system user the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "?"


def unavailable() -> str | None:
    if bin_dir() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; run scripts/install_postgres.sh)"
    user = _os_user()
    if user == "?":
        return "running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as"
    if user is not None and shutil.which("runuser") is None:
        return "running as root without runuser, so PostgreSQL cannot be started as a non-root user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One running server; ``url(db)`` gives a SQLAlchemy URL, ``create_database(name)`` a fresh database."""

    def __init__(self, folder: Path, port: int, user: str | None) -> None:
        self.folder, self.port, self.user = folder, port, user
        self._dbs = 0

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        command = [str(bin_dir() / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
        return done.stdout

    @classmethod
    def start(cls) -> PostgresServer:
        folder = Path(tempfile.mkdtemp(prefix="metaedge-pg-"))
        user = _os_user()
        if user is not None:
            shutil.chown(folder, user)
        server = cls(folder, _free_port(), user)
        data = str(folder / "data")
        server._run("initdb", "-D", data, "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c fsync=on "
                   "-c max_connections=100 -c shared_buffers=64MB")
        server._run("pg_ctl", "-D", data, "-l", str(folder / "log"), "-o", options, "-w", "-t", "60", "start")
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "kb") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._dbs += 1
        name = f"{prefix}_{os.getpid()}_{self._dbs}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

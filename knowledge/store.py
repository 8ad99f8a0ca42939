"""The knowledge base: one object over one database (SQLite or PostgreSQL), the API the CLI, ``kb update`` and the
drift detector call.

    kb = KnowledgeBase.init("sqlite:///kb.db")        # create or upgrade the schema
    run_id = kb.register_run("runs/lotA")
    bundle_id = kb.register_bundle("bundles/lotA", alias="champion")
    kb.ingest("line1.journal", "probe.jsonl")          # idempotent, one transaction per file
    kb.lineage("unit-0042")                            # unit -> adaptations -> bundle -> run -> data hashes
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import OperationalError

from . import queries
from .db import make_engine, resolve_url, sqlite_path, writer
from .errors import KnowledgeError
from .fleet_table import write_units_csv
from .ingest import MAX_RECORDS_PER_FILE, ingest_file, insert, now
from .registry import read_bundle, read_run
from .rows import AlertRow, BundleInfo, EvaluationRow, IngestResult, Lineage, UnitDetail, UnitSummary
from .schema import alerts, aliases, bundles, evaluations, run_data, runs

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the aliases the model-update loop uses (any other name is allowed too)
CHAMPION, CANDIDATE = "champion", "candidate"


def _alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def schema_head() -> str:
    """The newest migration revision this metaedge knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None  # the package ships its migrations
    return head


def _json_figures(value: dict[str, Any], what: str) -> dict[str, Any]:
    """``value`` checked to be a JSON object of finite numbers, strings, lists and objects."""
    if not isinstance(value, dict):
        raise KnowledgeError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise KnowledgeError(f"{what} must hold only finite numbers, strings, lists and dicts ({e})") from e


class KnowledgeBase:
    """A knowledge base at ``url`` (None: ``$METAEDGE_KB``, else ``sqlite:///kb.db`` in the current folder).

    The schema must exist and be current (``KnowledgeBase.init`` / ``metaedge kb init``).
    """

    def __init__(self, url: str | None = None, *, _check: bool = True) -> None:
        self.url = resolve_url(url)
        path = sqlite_path(self.url)
        if _check and path is not None and not path.is_file():
            raise KnowledgeError(f"no knowledge base at {path}; create it with `metaedge kb init --db {self.url}`")
        self.engine: Engine = make_engine(self.url)
        self._writer = writer(self.engine)
        if _check:
            self._check_schema()

    def __repr__(self) -> str:
        return f"KnowledgeBase({self.engine.url.render_as_string(hide_password=True)!r})"

    @classmethod
    def init(cls, url: str | None = None) -> KnowledgeBase:
        """Create the schema, or upgrade it to this metaedge's (Alembic ``upgrade head``); idempotent."""
        kb = cls(url, _check=False)
        path = sqlite_path(kb.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with kb._writer.begin() as conn:
                command.upgrade(_alembic_config(conn), "head")
        except OperationalError as e:
            raise KnowledgeError(f"cannot create the knowledge base at {kb!r} ({e.orig}); check the URL, the "
                                 "server and the permissions") from e
        return kb

    def close(self) -> None:
        """Release the connections (the object is unusable afterwards)."""
        self.engine.dispose()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_schema(self) -> None:
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as e:
            raise KnowledgeError(f"cannot open the knowledge base {self!r} ({e.orig}); check the URL and that the "
                                 "server runs") from e
        if current is None:
            raise KnowledgeError(f"{self!r} holds no knowledge base; create it with `metaedge kb init --db URL`")
        if current != schema_head():
            raise KnowledgeError(f"{self!r} has schema revision {current}, this metaedge expects {schema_head()}; "
                                 "upgrade it with `metaedge kb init --db URL`")

    # --- registration ---------------------------------------------------------------------------------------

    def register_run(self, run_dir: str | Path) -> str:
        """Record a training run (config and data hashes); returns its id, the sha256 hex of ``config.json``.

        Registering it again refreshes its path; bundles already registered from it are linked to it.
        """
        run = read_run(run_dir)
        with self._writer.begin() as conn:
            stmt = insert(conn, runs)
            conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"path": stmt.excluded.path}),
                         {"id": run.id, "path": run.path, "algo": run.algo, "family": run.family,
                          "config": run.config, "registered": now()})
            conn.execute(insert(conn, run_data).on_conflict_do_nothing(),
                         [{"run_id": run.id, **d.to_dict()} for d in run.data])
            conn.execute(update(bundles).where(bundles.c.run_id.is_(None), bundles.c.run_path == run.path)
                         .values(run_id=run.id))
        return run.id

    def register_bundle(self, bundle_dir: str | Path, alias: str | None = None) -> str:
        """Record a verified bundle; returns its id, the sha256 hex of its ``manifest.json``.

        The run its manifest names is registered with it when that run directory is here; otherwise the bundle
        keeps the run's path and is linked when the run is registered. ``alias``: also point this name at it.
        """
        b = read_bundle(bundle_dir)
        run_id = None
        if (Path(b.run_path) / "config.json").is_file():
            run_id = self.register_run(b.run_path)
        with self._writer.begin() as conn:
            if run_id is None:
                run_id = conn.execute(select(runs.c.id).where(runs.c.path == b.run_path)).scalar()
            row = {**{k: getattr(b, k) for k in ("id", "path", "run_path", "algo", "task_kind", "family",
                                                 "signing_key_id", "created")},
                   **{k: list(getattr(b, k)) for k in ("input_names", "output_names", "input_units", "output_units")},
                   "run_id": run_id, "registered": now()}
            stmt = insert(conn, bundles)
            conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={
                "path": stmt.excluded.path, "run_id": func.coalesce(bundles.c.run_id, stmt.excluded.run_id)}), row)
            if alias is not None:
                self._set_alias(conn, alias, b.id)
        return b.id

    def set_alias(self, name: str, bundle_id: str) -> None:
        """Point alias ``name`` (``champion``, ``candidate``, ...) at a registered bundle (an id or its prefix)."""
        target = self.bundle(bundle_id).id
        with self._writer.begin() as conn:
            self._set_alias(conn, name, target)

    @staticmethod
    def _set_alias(conn, name: str, bundle_id: str) -> None:
        if not name or len(name) > 512:
            raise KnowledgeError(f"alias {name!r} must be a non-empty name of at most 512 characters")
        stmt = insert(conn, aliases)
        conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={
            "bundle_id": stmt.excluded.bundle_id, "set": stmt.excluded.set}),
            {"name": name, "bundle_id": bundle_id, "set": now()})

    def bundle(self, ref: str) -> BundleInfo:
        """A registered bundle by alias, id, or a unique prefix of its id (at least 6 hex digits)."""
        with self.engine.connect() as conn:
            return queries.bundle(conn, ref)

    # --- journals ---------------------------------------------------------------------------------------------

    def ingest(self, *journals: str | Path, max_records: int = MAX_RECORDS_PER_FILE) -> IngestResult:
        """Store the records of each journal (SQLite or JSON Lines), one transaction per file; a record already
        stored is counted as a duplicate. A malformed file stores nothing and raises; files before it are kept."""
        done = []
        for path in journals:
            if not Path(path).is_file():
                raise KnowledgeError(f"journal {path} does not exist; pass the journal files a device wrote"
                                     + (f" ({len(done)} earlier files were ingested)" if done else ""))
            done.append(ingest_file(self._writer, path, max_records))
        return IngestResult(tuple(done))

    # --- queries ----------------------------------------------------------------------------------------------

    def units(self) -> list[UnitSummary]:
        """Every unit with its record counts, latest time and latest bundle, by name."""
        with self.engine.connect() as conn:
            return queries.unit_summaries(conn)

    def unit(self, unit: str) -> UnitDetail:
        """One unit with all its adaptations and checks, oldest first."""
        with self.engine.connect() as conn:
            return queries.unit_detail(conn, unit)

    def lineage(self, ref: str) -> Lineage:
        """unit -> adaptations -> bundles -> runs -> data hashes (``ref`` a unit), or bundle -> run -> data
        (``ref`` a bundle alias, id or id prefix). A unit name wins over a bundle of the same spelling."""
        with self.engine.connect() as conn:
            return queries.lineage(conn, ref)

    def export_units(self, out_csv: str | Path, bundle: str | None = None, min_points: int = 1) -> Path:
        """Write the per-unit table of the fleet (``table`` family input; see :mod:`.fleet_table`)."""
        with self.engine.connect() as conn:
            return write_units_csv(conn, Path(out_csv), bundle, min_points)

    # --- decisions and alerts ---------------------------------------------------------------------------------

    def record_evaluation(self, candidate: str, champion: str, figures: dict[str, Any], decision: str) -> int:
        """Store a candidate-vs-champion evaluation (bundle refs, JSON figures, the decision); returns its id."""
        row = {"candidate": self.bundle(candidate).id, "champion": self.bundle(champion).id,
               "figures": _json_figures(figures, "figures"), "decision": decision, "time": now()}
        with self._writer.begin() as conn:
            return int(conn.execute(evaluations.insert().values(row).returning(evaluations.c.id)).scalar_one())

    def evaluations(self) -> list[EvaluationRow]:
        """Every stored evaluation, oldest first."""
        with self.engine.connect() as conn:
            return [EvaluationRow(**r._mapping) for r in conn.execute(select(evaluations).order_by(evaluations.c.id))]

    def add_alert(self, unit: str, detector: str, evidence: dict[str, Any]) -> int:
        """Open an alert on a stored unit (``detector`` names the rule and its parameters); returns its id."""
        evidence = _json_figures(evidence, "evidence")
        with self._writer.begin() as conn:
            if conn.execute(select(func.count()).where(queries.units_table.c.name == unit)).scalar_one() == 0:
                raise KnowledgeError(f"unit {unit!r} is not in the knowledge base; ingest its journal first")
            return int(conn.execute(alerts.insert().values(unit=unit, detector=detector, evidence=evidence,
                                                           opened=now()).returning(alerts.c.id)).scalar_one())

    def close_alert(self, alert_id: int) -> None:
        """Mark an alert handled (the unit was recalibrated)."""
        with self._writer.begin() as conn:
            done = conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.closed.is_(None))
                                .values(closed=now()))
            if done.rowcount != 1:
                raise KnowledgeError(f"alert {alert_id} does not exist or is already closed; see `metaedge kb alerts`")

    def alerts(self, open_only: bool = True) -> list[AlertRow]:
        """Alerts, oldest first (only open ones by default)."""
        stmt = select(alerts).order_by(alerts.c.id)
        if open_only:
            stmt = stmt.where(alerts.c.closed.is_(None))
        with self.engine.connect() as conn:
            return [AlertRow(**r._mapping) for r in conn.execute(stmt)]


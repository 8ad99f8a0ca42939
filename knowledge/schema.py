"""The knowledge base's tables (SQLAlchemy Core; the same schema on SQLite and PostgreSQL).

Ids: a run is the sha256 hex of its ``config.json`` bytes, a bundle the sha256 hex of its ``manifest.json`` bytes
(``BundleRef.manifest_sha256`` in journal records), a record its ``record_id``. Times are ISO 8601 UTC strings,
which sort in time order.

Records (adaptations, checks) and deployments name their bundle by id WITHOUT a foreign key: a journal may arrive
before its bundle is registered (or from a bundle that never will be), and the record is kept all the same; the
lineage shows such a bundle as unregistered until ``kb register`` adds it. Units and devices are created by the
ingest that first names them, so records do reference them by foreign key.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()
#: the migration revision this schema is (the head of ``migrations/versions``); a knowledge base at another
#: revision is refused until ``kb init`` upgrades it
REVISION = "0001"

DIGEST = 64  # sha256 hex
TIME = 40  # ISO 8601
NAME = 512  # the journal's longest text field

runs = Table(
    "runs", metadata,
    Column("id", String(DIGEST), primary_key=True),
    Column("path", Text, nullable=False),
    Column("algo", String(NAME)),
    Column("family", String(NAME)),
    Column("config", JSON, nullable=False),  # the parsed config.json
    Column("registered", String(TIME), nullable=False),
)

run_data = Table(
    "run_data", metadata,
    Column("run_id", String(DIGEST), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(NAME), primary_key=True),  # "option=<path>" or "generated:<family>"
    Column("sha256", String(DIGEST), nullable=False),
    Column("size", Integer),  # bytes hashed; None for generated data
)

bundles = Table(
    "bundles", metadata,
    Column("id", String(DIGEST), primary_key=True),
    Column("path", Text, nullable=False),
    Column("run_id", String(DIGEST), ForeignKey("runs.id"), nullable=True),
    Column("run_path", Text, nullable=False),  # the manifest's provenance.run
    Column("algo", String(NAME), nullable=False),
    Column("task_kind", String(NAME), nullable=False),
    Column("family", JSON, nullable=False),
    Column("input_names", JSON, nullable=False),
    Column("output_names", JSON, nullable=False),
    Column("input_units", JSON, nullable=False),
    Column("output_units", JSON, nullable=False),
    Column("signing_key_id", String(NAME)),
    Column("created", String(TIME), nullable=False),  # the manifest's provenance.created
    Column("registered", String(TIME), nullable=False),
)

aliases = Table(
    "aliases", metadata,
    Column("name", String(NAME), primary_key=True),
    Column("bundle_id", String(DIGEST), ForeignKey("bundles.id"), nullable=False),
    Column("set", String(TIME), nullable=False),
)

devices = Table(
    "devices", metadata,
    Column("host_id", String(NAME), primary_key=True),
    Column("profile", String(NAME)),
    Column("first_seen", String(TIME), nullable=False),
    Column("last_seen", String(TIME), nullable=False),
)

units = Table(
    "units", metadata,
    Column("name", String(NAME), primary_key=True),
    Column("first_seen", String(TIME), nullable=False),
    Column("last_seen", String(TIME), nullable=False),
)

deployments = Table(
    "deployments", metadata,
    Column("bundle_id", String(DIGEST), primary_key=True),
    Column("host_id", String(NAME), ForeignKey("devices.host_id"), primary_key=True),
    Column("first_seen", String(TIME), nullable=False),
    Column("last_seen", String(TIME), nullable=False),
    Index("ix_deployments_host", "host_id"),
)

def _record_columns() -> list[Column]:
    """What every journaled record (an adaptation, a check) has first: its id, the unit, the device, the bundle and
    its signer, the device's time (new Column objects each call: a column belongs to one table)."""
    return [
        Column("record_id", String(NAME), primary_key=True),
        Column("unit", String(NAME), ForeignKey("units.name"), nullable=False),
        Column("host_id", String(NAME), ForeignKey("devices.host_id"), nullable=False),
        Column("bundle_id", String(DIGEST), nullable=False),
        Column("signing_key_id", String(NAME)),
        Column("time", String(TIME), nullable=False),
    ]


adaptations = Table(
    "adaptations", metadata,
    *_record_columns(),
    Column("support_x", JSON, nullable=False),  # (k, n_inputs) physical units
    Column("support_y", JSON, nullable=False),  # (k, n_outputs)
    Column("n_points", Integer, nullable=False),
    Column("steps_run", Integer, nullable=False),
    Column("steps_kept", Integer, nullable=False),
    Column("loss_before", Float),  # None: not finite on the device
    Column("loss_after", Float),
    Column("state_sha256", String(DIGEST)),
    Column("start_state_sha256", String(DIGEST)),
    Column("source", Text, nullable=False),  # the journal file it was ingested from
    Column("ingested", String(TIME), nullable=False),
    Index("ix_adaptations_unit_time", "unit", "time"),
    Index("ix_adaptations_bundle", "bundle_id"),
)

checks = Table(
    "checks", metadata,
    *_record_columns(),
    Column("x", JSON, nullable=False),  # (m, n_inputs)
    Column("reference", JSON, nullable=False),  # (m, n_outputs)
    Column("predicted", JSON, nullable=False),  # (m, n_outputs)
    Column("n_points", Integer, nullable=False),
    Column("state_sha256", String(DIGEST)),
    Column("source", Text, nullable=False),
    Column("ingested", String(TIME), nullable=False),
    Index("ix_checks_unit_time", "unit", "time"),
    Index("ix_checks_bundle", "bundle_id"),
)

evaluations = Table(
    "evaluations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("candidate", String(DIGEST), ForeignKey("bundles.id"), nullable=False),
    Column("champion", String(DIGEST), ForeignKey("bundles.id"), nullable=False),
    Column("figures", JSON, nullable=False),
    Column("decision", String(NAME), nullable=False),
    Column("time", String(TIME), nullable=False),
    Index("ix_evaluations_candidate", "candidate"),
)

alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit", String(NAME), ForeignKey("units.name"), nullable=False),
    Column("detector", String(NAME), nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("opened", String(TIME), nullable=False),
    Column("closed", String(TIME)),
    Index("ix_alerts_unit", "unit"),
)

"""The initial knowledge-base schema: runs, bundles, aliases, devices, units, deployments, adaptations, checks,
evaluations, alerts.

A revision is a frozen snapshot: later schema changes go into new revisions, never here
(``tests/test_knowledge.py`` checks that the migrated database matches ``schema.py``).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DIGEST, TIME, NAME = 64, 40, 512


def _record_columns() -> list[sa.Column]:
    """The columns adaptations and checks share, ahead of their own."""
    return [sa.Column("record_id", sa.String(NAME), primary_key=True),
            sa.Column("unit", sa.String(NAME), sa.ForeignKey("units.name"), nullable=False),
            sa.Column("host_id", sa.String(NAME), sa.ForeignKey("devices.host_id"), nullable=False),
            sa.Column("bundle_id", sa.String(DIGEST), nullable=False),
            sa.Column("signing_key_id", sa.String(NAME)),
            sa.Column("time", sa.String(TIME), nullable=False)]


def _trailer() -> list[sa.Column]:
    return [sa.Column("state_sha256", sa.String(DIGEST)),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("ingested", sa.String(TIME), nullable=False)]


def upgrade() -> None:
    op.create_table("runs",
                    sa.Column("id", sa.String(DIGEST), primary_key=True),
                    sa.Column("path", sa.Text, nullable=False),
                    sa.Column("algo", sa.String(NAME)),
                    sa.Column("family", sa.String(NAME)),
                    sa.Column("config", sa.JSON, nullable=False),
                    sa.Column("registered", sa.String(TIME), nullable=False))
    op.create_table("run_data",
                    sa.Column("run_id", sa.String(DIGEST), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                              primary_key=True),
                    sa.Column("name", sa.String(NAME), primary_key=True),
                    sa.Column("sha256", sa.String(DIGEST), nullable=False),
                    sa.Column("size", sa.Integer))
    op.create_table("bundles",
                    sa.Column("id", sa.String(DIGEST), primary_key=True),
                    sa.Column("path", sa.Text, nullable=False),
                    sa.Column("run_id", sa.String(DIGEST), sa.ForeignKey("runs.id"), nullable=True),
                    sa.Column("run_path", sa.Text, nullable=False),
                    sa.Column("algo", sa.String(NAME), nullable=False),
                    sa.Column("task_kind", sa.String(NAME), nullable=False),
                    sa.Column("family", sa.JSON, nullable=False),
                    sa.Column("input_names", sa.JSON, nullable=False),
                    sa.Column("output_names", sa.JSON, nullable=False),
                    sa.Column("input_units", sa.JSON, nullable=False),
                    sa.Column("output_units", sa.JSON, nullable=False),
                    sa.Column("signing_key_id", sa.String(NAME)),
                    sa.Column("created", sa.String(TIME), nullable=False),
                    sa.Column("registered", sa.String(TIME), nullable=False))
    op.create_table("aliases",
                    sa.Column("name", sa.String(NAME), primary_key=True),
                    sa.Column("bundle_id", sa.String(DIGEST), sa.ForeignKey("bundles.id"), nullable=False),
                    sa.Column("set", sa.String(TIME), nullable=False))
    op.create_table("devices",
                    sa.Column("host_id", sa.String(NAME), primary_key=True),
                    sa.Column("profile", sa.String(NAME)),
                    sa.Column("first_seen", sa.String(TIME), nullable=False),
                    sa.Column("last_seen", sa.String(TIME), nullable=False))
    op.create_table("units",
                    sa.Column("name", sa.String(NAME), primary_key=True),
                    sa.Column("first_seen", sa.String(TIME), nullable=False),
                    sa.Column("last_seen", sa.String(TIME), nullable=False))
    op.create_table("deployments",
                    sa.Column("bundle_id", sa.String(DIGEST), primary_key=True),
                    sa.Column("host_id", sa.String(NAME), sa.ForeignKey("devices.host_id"), primary_key=True),
                    sa.Column("first_seen", sa.String(TIME), nullable=False),
                    sa.Column("last_seen", sa.String(TIME), nullable=False))
    op.create_index("ix_deployments_host", "deployments", ["host_id"])
    op.create_table("adaptations", *_record_columns(),
                    sa.Column("support_x", sa.JSON, nullable=False),
                    sa.Column("support_y", sa.JSON, nullable=False),
                    sa.Column("n_points", sa.Integer, nullable=False),
                    sa.Column("steps_run", sa.Integer, nullable=False),
                    sa.Column("steps_kept", sa.Integer, nullable=False),
                    sa.Column("loss_before", sa.Float),
                    sa.Column("loss_after", sa.Float),
                    sa.Column("state_sha256", sa.String(DIGEST)),
                    sa.Column("start_state_sha256", sa.String(DIGEST)),
                    sa.Column("source", sa.Text, nullable=False),
                    sa.Column("ingested", sa.String(TIME), nullable=False))
    op.create_index("ix_adaptations_unit_time", "adaptations", ["unit", "time"])
    op.create_index("ix_adaptations_bundle", "adaptations", ["bundle_id"])
    op.create_table("checks", *_record_columns(),
                    sa.Column("x", sa.JSON, nullable=False),
                    sa.Column("reference", sa.JSON, nullable=False),
                    sa.Column("predicted", sa.JSON, nullable=False),
                    sa.Column("n_points", sa.Integer, nullable=False),
                    *_trailer())
    op.create_index("ix_checks_unit_time", "checks", ["unit", "time"])
    op.create_index("ix_checks_bundle", "checks", ["bundle_id"])
    op.create_table("evaluations",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("candidate", sa.String(DIGEST), sa.ForeignKey("bundles.id"), nullable=False),
                    sa.Column("champion", sa.String(DIGEST), sa.ForeignKey("bundles.id"), nullable=False),
                    sa.Column("figures", sa.JSON, nullable=False),
                    sa.Column("decision", sa.String(NAME), nullable=False),
                    sa.Column("time", sa.String(TIME), nullable=False))
    op.create_index("ix_evaluations_candidate", "evaluations", ["candidate"])
    op.create_table("alerts",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("unit", sa.String(NAME), sa.ForeignKey("units.name"), nullable=False),
                    sa.Column("detector", sa.String(NAME), nullable=False),
                    sa.Column("evidence", sa.JSON, nullable=False),
                    sa.Column("opened", sa.String(TIME), nullable=False),
                    sa.Column("closed", sa.String(TIME)))
    op.create_index("ix_alerts_unit", "alerts", ["unit"])


def downgrade() -> None:
    for index, table in (("ix_alerts_unit", "alerts"), ("ix_evaluations_candidate", "evaluations"),
                         ("ix_checks_bundle", "checks"), ("ix_checks_unit_time", "checks"),
                         ("ix_adaptations_bundle", "adaptations"), ("ix_adaptations_unit_time", "adaptations"),
                         ("ix_deployments_host", "deployments")):
        op.drop_index(index, table_name=table)
    for table in ("alerts", "evaluations", "checks", "adaptations", "deployments", "units", "devices", "aliases",
                  "bundles", "run_data", "runs"):
        op.drop_table(table)

"""Read queries behind ``kb units``, ``kb show``, ``kb lineage`` and bundle lookup (one connection each).

Each uses the indexes of :mod:`.schema`: ``(unit, time)`` on adaptations and checks for a unit's records,
``bundle_id`` for a bundle's counts, so a lookup stays fast with hundreds of thousands of records stored.
"""

from __future__ import annotations

import math
import re
from typing import Any

from sqlalchemy import Connection, Row, Table, distinct, func, select

from .errors import KnowledgeError
from .rows import (
    AdaptationRow,
    BundleInfo,
    BundleLineage,
    CheckRow,
    DataFile,
    Lineage,
    Matrix,
    RunInfo,
    UnitDetail,
    UnitSummary,
)
from .schema import adaptations, aliases, bundles, checks, run_data, runs
from .schema import units as units_table

#: shortest id prefix accepted for a bundle reference
MIN_PREFIX = 6


def _matrix(value: Any) -> Matrix:
    return tuple(tuple(float(c) for c in row) for row in value)


def _loss(value: float | None) -> float:
    return math.nan if value is None else float(value)


def adaptation_row(r: Row) -> AdaptationRow:
    return AdaptationRow(r.record_id, r.unit, r.bundle_id, r.host_id, r.time, _matrix(r.support_x),
                         _matrix(r.support_y), r.steps_kept, _loss(r.loss_before), _loss(r.loss_after),
                         r.state_sha256, r.steps_run, r.start_state_sha256)


def check_row(r: Row) -> CheckRow:
    return CheckRow(r.record_id, r.unit, r.bundle_id, r.time, _matrix(r.x), _matrix(r.reference),
                    _matrix(r.predicted), r.state_sha256)


# --- bundles and runs ------------------------------------------------------------------------------------------

def resolve_bundle(conn: Connection, ref: str) -> str | None:
    """The id ``ref`` names (alias, id, or unique id prefix), None when none matches; ambiguous prefixes raise."""
    by_alias = conn.execute(select(aliases.c.bundle_id).where(aliases.c.name == ref)).scalar()
    if by_alias is not None:
        return by_alias
    if not re.fullmatch(r"[0-9a-fA-F]+", ref) or len(ref) < MIN_PREFIX:
        return None
    ref = ref.lower()
    found = conn.execute(select(bundles.c.id).where(bundles.c.id.startswith(ref, autoescape=True)).limit(2)).scalars()
    ids = list(found)
    if len(ids) > 1:
        raise KnowledgeError(f"bundle prefix {ref!r} matches more than one bundle ({', '.join(i[:12] for i in ids)}, "
                             "...); give more digits")
    return ids[0] if ids else None


def bundle(conn: Connection, ref: str) -> BundleInfo:
    """A registered bundle by alias, id or id prefix; :class:`KnowledgeError` naming the choices otherwise."""
    found = resolve_bundle(conn, ref)
    info = bundle_info(conn, found) if found is not None else None
    if info is None:
        names = sorted(conn.execute(select(aliases.c.name)).scalars())
        raise KnowledgeError(f"no registered bundle is called {ref!r}; pass an alias ({', '.join(names) or 'none set'})"
                             f", a bundle id or a prefix of at least {MIN_PREFIX} hex digits, or register it with "
                             "`metaedge kb register BUNDLE`")
    return info


def bundle_info(conn: Connection, bundle_id: str) -> BundleInfo | None:
    r = conn.execute(select(bundles).where(bundles.c.id == bundle_id)).first()
    if r is None:
        return None
    names = tuple(sorted(conn.execute(select(aliases.c.name).where(aliases.c.bundle_id == bundle_id)).scalars()))
    return BundleInfo(r.id, r.path, r.run_id, r.run_path, r.algo, r.task_kind, dict(r.family),
                      tuple(r.input_names), tuple(r.output_names), r.signing_key_id, r.created, r.registered, names)


def run_info(conn: Connection, run_id: str | None) -> RunInfo | None:
    if run_id is None:
        return None
    r = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if r is None:
        return None
    data = conn.execute(select(run_data).where(run_data.c.run_id == run_id).order_by(run_data.c.name))
    return RunInfo(r.id, r.path, r.algo, r.family, r.registered,
                   tuple(DataFile(d.name, d.sha256, d.size) for d in data))


# --- units -----------------------------------------------------------------------------------------------------

def _latest(table: Table, column, unit) -> Any:
    """Correlated subquery: ``column`` of the unit's latest record in ``table`` (index (unit, time))."""
    return (select(column).where(table.c.unit == unit).order_by(table.c.time.desc(), table.c.record_id.desc())
            .limit(1).scalar_subquery())


def _summaries(conn: Connection, only: str | None = None) -> list[UnitSummary]:
    name = units_table.c.name
    counts = [select(func.count()).where(t.c.unit == name).scalar_subquery() for t in (adaptations, checks)]
    stmt = select(name, *counts, _latest(adaptations, adaptations.c.time, name), _latest(checks, checks.c.time, name),
                  func.coalesce(_latest(adaptations, adaptations.c.bundle_id, name),
                                _latest(checks, checks.c.bundle_id, name)))
    stmt = stmt.where(name == only) if only is not None else stmt.order_by(name)
    return [UnitSummary(u, n_a, n_c, max(t for t in (t_a, t_c) if t is not None), last)
            for u, n_a, n_c, t_a, t_c, last in conn.execute(stmt)]


def unit_summaries(conn: Connection) -> list[UnitSummary]:
    return _summaries(conn)


def _unit_or_fail(conn: Connection, unit: str) -> UnitSummary:
    found = _summaries(conn, unit)
    if not found:
        n = conn.execute(select(func.count()).select_from(units_table)).scalar_one()
        raise KnowledgeError(f"unit {unit!r} is not in the knowledge base ({n} units are; see `metaedge kb units`); "
                             "ingest its journal with `metaedge kb ingest`")
    return found[0]


def unit_detail(conn: Connection, unit: str) -> UnitDetail:
    summary = _unit_or_fail(conn, unit)
    return UnitDetail(summary, _adaptations_of(conn, unit), tuple(
        check_row(r) for r in conn.execute(select(checks).where(checks.c.unit == unit)
                                           .order_by(checks.c.time, checks.c.record_id))))


def _adaptations_of(conn: Connection, unit: str) -> tuple[AdaptationRow, ...]:
    stmt = select(adaptations).where(adaptations.c.unit == unit).order_by(adaptations.c.time, adaptations.c.record_id)
    return tuple(adaptation_row(r) for r in conn.execute(stmt))


# --- lineage ---------------------------------------------------------------------------------------------------

def _bundle_lineage(conn: Connection, bundle_id: str, n_adaptations: int, n_units: int) -> BundleLineage:
    info = bundle_info(conn, bundle_id)
    return BundleLineage(bundle_id, info, run_info(conn, info.run_id if info else None), n_adaptations, n_units)


def lineage(conn: Connection, ref: str) -> Lineage:
    if conn.execute(select(units_table.c.name).where(units_table.c.name == ref)).first() is not None:
        rows = _adaptations_of(conn, ref)
        used: dict[str, int] = {}
        for a in rows:
            used[a.bundle_id] = used.get(a.bundle_id, 0) + 1
        return Lineage(ref, ref, rows, tuple(_bundle_lineage(conn, b, n, 1) for b, n in used.items()))
    found = resolve_bundle(conn, ref)
    if found is None and re.fullmatch(r"[0-9a-f]{64}", ref) and conn.execute(
            select(adaptations.c.record_id).where(adaptations.c.bundle_id == ref).limit(1)).first() is not None:
        found = ref  # records name it but it is not registered yet: its lineage ends at the bundle
    if found is None:
        raise KnowledgeError(f"{ref!r} is neither a unit nor a registered bundle (alias, id or id prefix); see "
                             "`metaedge kb units` and register bundles with `metaedge kb register`")
    n_adaptations, n_units = conn.execute(
        select(func.count(), func.count(distinct(adaptations.c.unit))).where(adaptations.c.bundle_id == found)).one()
    return Lineage(ref, None, (), (_bundle_lineage(conn, found, n_adaptations, n_units),))

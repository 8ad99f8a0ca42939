"""The fleet as a per-unit table: what ``kb export-units`` writes and the ``table`` family trains on.

One CSV row per reference point: ``unit``, then the bundle's input names, then its output names, in physical
units. An adaptation contributes its support points (``support_x``, ``support_y``), a check record its readings
(``x``, ``reference``; the model's predictions are not data). A point recorded twice for a unit (the same support
set journaled by two adaptations) is written once. Units with fewer than ``min_points`` points are left out.

Read it back with ``--family table --family-option path=fleet.csv --family-option group=unit
--family-option x_columns=<inputs> --family-option y_column=<output>``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy import Connection, select, union

from ..atomic import atomic_write_text
from .errors import KnowledgeError
from .queries import bundle, bundle_info
from .schema import adaptations, checks

UNIT_COLUMN = "unit"


def _columns(conn: Connection, ref: str | None) -> tuple[list[str], list[str], str | None]:
    """Input names, output names and the bundle id to filter on (None: every record, all of one interface)."""
    if ref is not None:
        b = bundle(conn, ref)
        return list(b.input_names), list(b.output_names), b.id
    ids = sorted(conn.execute(union(select(adaptations.c.bundle_id), select(checks.c.bundle_id))).scalars())
    if not ids:
        raise KnowledgeError("the knowledge base holds no adaptations or checks yet; ingest journals with "
                             "`metaedge kb ingest` first")
    interfaces = {}
    for i in ids:
        info = bundle_info(conn, i)
        if info is None:
            raise KnowledgeError(f"records name bundle {i[:12]}, which is not registered, so its column names are "
                                 "unknown; register it with `metaedge kb register BUNDLE` or pass --bundle REF")
        interfaces[(info.input_names, info.output_names)] = i
    if len(interfaces) > 1:
        raise KnowledgeError(f"the records come from bundles with {len(interfaces)} different input/output names; "
                             "pass --bundle REF to export the units of one bundle")
    (inputs, outputs), = interfaces
    return list(inputs), list(outputs), None


def unit_points(conn: Connection, bundle_id: str | None, width: int) -> dict[str, list[tuple[float, ...]]]:
    """Per unit (sorted), its distinct points ``x + y`` (``width`` values each) in record-time order."""
    points: dict[str, dict[tuple[float, ...], None]] = {}
    sources = ((adaptations, adaptations.c.support_x, adaptations.c.support_y),
               (checks, checks.c.x, checks.c.reference))
    for table, xs, ys in sources:
        stmt = select(table.c.unit, xs, ys).order_by(table.c.unit, table.c.time, table.c.record_id)
        if bundle_id is not None:
            stmt = stmt.where(table.c.bundle_id == bundle_id)
        for unit, x, y in conn.execute(stmt):
            seen = points.setdefault(unit, {})
            for xr, yr in zip(x, y):
                row = tuple(float(v) for v in (*xr, *yr))
                if len(row) != width:
                    raise KnowledgeError(f"unit {unit!r} has a record with {len(xr)} inputs and {len(yr)} outputs, "
                                         f"not the bundle's {width} columns; pass --bundle REF for its own bundle")
                seen[row] = None
    return {u: list(points[u]) for u in sorted(points)}


def write_units_csv(conn: Connection, out: Path, ref: str | None = None, min_points: int = 1) -> Path:
    """Write the per-unit table to ``out`` (atomically; an existing file is replaced) and return ``out``."""
    if min_points < 1:
        raise KnowledgeError(f"min_points={min_points} must be at least 1")
    inputs, outputs, bundle_id = _columns(conn, ref)
    header = [UNIT_COLUMN, *inputs, *outputs]
    if len(set(header)) != len(header):
        raise KnowledgeError(f"the bundle's column names {inputs + outputs} repeat each other or {UNIT_COLUMN!r}, so "
                             "a table cannot hold them; rename its inputs/outputs at export")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    kept = 0
    for unit, rows in unit_points(conn, bundle_id, len(inputs) + len(outputs)).items():
        if len(rows) >= min_points:
            kept += 1
            writer.writerows([unit, *(repr(v) for v in row)] for row in rows)
    if kept == 0:
        raise KnowledgeError(f"no unit has at least {min_points} reference points"
                             + (f" from bundle {ref}" if ref else "") + "; lower --min-points or ingest more journals")
    return atomic_write_text(out, buffer.getvalue())

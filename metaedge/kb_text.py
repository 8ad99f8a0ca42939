"""Plain-text tables for the ``metaedge kb`` commands (the ``--json`` forms are the rows' ``to_dict``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .knowledge.rows import Lineage, UnitDetail, UnitSummary

#: hex digits of an id shown in tables (``--json`` and ``kb lineage`` give whole ids)
SHORT = 12


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, a rule under the header."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(digest: str | None) -> str | None:
    return digest[:SHORT] if digest else digest


def _number(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.4g}"


def _points(m: Sequence[Sequence[float]]) -> str:
    return " ".join("(" + ", ".join(f"{c:g}" for c in row) + ")" for row in m)


def units_text(units: Sequence[UnitSummary]) -> str:
    return table(["unit", "adaptations", "checks", "last", "bundle"],
                 [(u.unit, u.n_adaptations, u.n_checks, u.last_time, _short(u.last_bundle)) for u in units])


def unit_text(d: UnitDetail) -> str:
    s = d.summary
    parts = [f"unit {s.unit}: {s.n_adaptations} adaptations, {s.n_checks} checks, last {s.last_time}", "",
             table(["adaptation", "time", "bundle", "device", "points", "steps kept", "loss before", "loss after",
                    "support x -> y"],
                   [(a.record_id, a.time, _short(a.bundle_id), a.device, len(a.support_x), a.steps_kept,
                     _number(a.loss_before), _number(a.loss_after),
                     f"{_points(a.support_x)} -> {_points(a.support_y)}") for a in d.adaptations])]
    if d.checks:
        parts += ["", table(["check", "time", "bundle", "points", "x", "reference", "predicted"],
                            [(c.record_id, c.time, _short(c.bundle_id), len(c.x), _points(c.x), _points(c.reference),
                              _points(c.predicted)) for c in d.checks])]
    return "\n".join(parts)


def lineage_text(line: Lineage) -> str:
    out = []
    if line.unit is not None:
        out.append(f"unit {line.unit}: {len(line.adaptations)} adaptations")
        out += [f"  adaptation {a.record_id}  {a.time}  bundle {_short(a.bundle_id)}  state {_short(a.state_sha256)}"
                for a in line.adaptations]
    for link in line.bundles:
        b = link.bundle
        if b is None:
            out.append(f"bundle {link.bundle_id} (not registered: `metaedge kb register BUNDLE` links it)  "
                       f"{link.n_adaptations} adaptations")
            continue
        aliases = f" [{', '.join(b.aliases)}]" if b.aliases else ""
        out.append(f"bundle {b.id}{aliases}  {b.algo} {b.task_kind}  signed by {b.signing_key_id or 'nobody'}  "
                   f"{link.n_adaptations} adaptations of {link.n_units} units")
        out.append(f"  path {b.path}  created {b.created}")
        r = link.run
        if r is None:
            out.append(f"  run {b.run_path} (not registered)")
            continue
        out.append(f"  run {r.id}  {r.algo} on {r.family}  {r.path}")
        out += [f"    data {d.sha256}  {d.name}" + (f"  ({d.size} bytes)" if d.size is not None else "")
                for d in r.data]
    return "\n".join(out)

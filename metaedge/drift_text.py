"""Plain-text and JSON forms of drift alerts for ``metaedge kb alerts``."""

from __future__ import annotations

from typing import Any

from .knowledge.alerts import Alert


def alert_dict(alert: Alert) -> dict[str, Any]:
    """One alert as ``kb alerts --json`` prints it: unit, the knowledge base's alert id, detector, evidence."""
    return {"unit": alert.unit, "alert_id": alert.alert_id, "detector": alert.detector, **alert.evidence()}


def alerts_text(alerts: list[Alert], detector: str, n_units: int) -> str:
    """A table of the units due for recalibration, then the command that recalibrates one."""
    if not alerts:
        return f"no unit due for recalibration ({detector}, {n_units} unit(s) with checks scanned)"
    lines = [f"{len(alerts)} unit(s) due for recalibration ({detector}):",
             f"{'unit':<20} {'alert':>5} {'crossed at':<26} {'check':>5} {'statistic':>9} {'limit':>6} {'scale':>9} "
             f"{'dir':<4} last residuals"]
    for a in alerts:
        ev = a.drift.evidence
        last = " ".join(f"{r:+.3g}" for r in ev.residuals[-5:])
        lines.append(f"{a.unit:<20} {a.alert_id if a.alert_id is not None else '-':>5} {a.crossed_time:<26} "
                     f"{a.n_checks:>5} {a.drift.statistic:>9.3g} {ev.threshold:>6.3g} {ev.scale:>9.3g} "
                     f"{ev.direction or '':<4} {last}")
    lines.append("recalibrate a unit from its last state: metaedge adapt BUNDLE --support new.csv --start OLD.state "
                 "--out NEW.state --journal FILE --unit UNIT (docs/knowledge.md)")
    return "\n".join(lines)

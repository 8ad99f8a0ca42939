"""Drift alerts: which units are due for recalibration (``metaedge kb alerts``).

:func:`scan` reads every unit's in-service checks through the knowledge-base API (``kb.units()``,
``kb.unit(u).checks``), turns each check record into one residual per output (``reference - predicted``, the mean
over that check's reference points, physical units), keeps the checks since the unit's latest calibration (a
recalibration starts a fresh sequence), and runs a detector of :mod:`.drift` over them in time order. Each unit's
residual scale comes from its first ``warmup`` checks after the calibration, shrunk toward the value pooled over
the units of the same bundle (:func:`.drift.unit_scales`: they share the outputs' physical units). Each alarm is
stored once (``kb.add_alert``; an open alert of the same unit, detector and crossing check is not added again) and
returned as an :class:`Alert` with its evidence.

A unit due for recalibration is recalibrated from its last state (``Model.adapt(start=...)``, ``metaedge adapt
--start STATE``) with a few new reference points; see ``docs/knowledge.md``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from metaedge.errors import InputError

from .drift import DETECTORS, DriftResult, detect, unit_scales

_log = logging.getLogger("metaedge.knowledge")
#: residuals and statistics shown as evidence (the most recent ones)
EVIDENCE_LAST = 8


def _when(time: str) -> datetime:
    """An ISO 8601 time as an aware datetime (``Z`` accepted; naive times are taken as UTC)."""
    try:
        t = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"record time {time!r} is not an ISO 8601 time; the journal that held it is damaged") from e
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ResidualSeries:
    """A unit's check residuals since its latest calibration, oldest first.

    ``residuals`` ``(n, n_outputs)``: per check record, the mean of ``reference - predicted`` over its points.
    """

    unit: str
    bundle_id: str
    times: tuple[str, ...]
    record_ids: tuple[str, ...]
    residuals: np.ndarray


def residual_series(detail: Any) -> ResidualSeries | None:
    """The :class:`ResidualSeries` of a unit (a ``kb.unit(u)`` answer), or None without checks since its latest
    calibration. Checks count from the latest adaptation's time on and must be made with its bundle."""
    checks = sorted(detail.checks, key=lambda c: _when(c.time))
    if detail.adaptations:
        last = max(detail.adaptations, key=lambda a: _when(a.time))
        checks = [c for c in checks if _when(c.time) >= _when(last.time) and c.bundle_id == last.bundle_id]
    elif checks:  # checks of a unit calibrated elsewhere: those made with its latest check's bundle
        checks = [c for c in checks if c.bundle_id == checks[-1].bundle_id]
    if not checks:
        return None
    res = np.array([np.mean(np.subtract(c.reference, c.predicted), axis=0) for c in checks], dtype=np.float64)
    return ResidualSeries(detail.summary.unit, checks[0].bundle_id, tuple(c.time for c in checks),
                          tuple(c.record_id for c in checks), res.reshape(len(checks), -1))


@dataclass(frozen=True)
class Alert:
    """A unit due for recalibration: which output drifted, where the statistic crossed, and the evidence."""

    unit: str
    bundle_id: str
    detector: str
    output: int  # index of the bundle output that drifted
    crossed_time: str  # time of the check at which the statistic crossed its threshold
    crossed_record_id: str
    n_checks: int  # checks since the calibration up to the crossing
    drift: DriftResult
    alert_id: int | None = None  # the knowledge base's id (None: not stored)

    def evidence(self) -> dict[str, Any]:
        """What ``kb.add_alert`` stores and ``kb alerts --json`` prints: the last residuals and statistics, the
        statistic at the crossing, the threshold, scale and parameters."""
        return {"bundle_id": self.bundle_id, "output": self.output, "crossed_time": self.crossed_time,
                "crossed_record_id": self.crossed_record_id, "n_checks": self.n_checks,
                "statistic": self.drift.statistic, **self.drift.evidence.as_dict(last=EVIDENCE_LAST)}


def _first_alarm(series: ResidualSeries, scales: np.ndarray, detector: str, limit: float | None
                 ) -> tuple[int, DriftResult] | None:
    """The earliest alarm over the series' outputs (``scales`` ``(n_outputs,)``): ``(output, result)``, or None."""
    found = [(j, detect(series.residuals[:, j], float(scales[j]), detector, limit)) for j in range(len(scales))]
    found = [(j, r) for j, r in found if r.alarm]
    return min(found, key=lambda jr: jr[1].index) if found else None


def scan(kb: Any, detector: str = "cusum", warmup: int = 8, scale: float | None = None, limit: float | None = None,
         record: bool = True) -> list[Alert]:
    """Run ``detector`` (:data:`.drift.DETECTORS`) over every unit's checks since its latest calibration.

    ``limit``: the detector's alarm threshold in units of the scale (None: its stated default; see
    :func:`.drift.detect`).
    ``scale``: the residual scale in the outputs' physical units for every unit (None: each unit's own from its
    first ``warmup`` checks, shrunk toward its bundle's fleet value, :func:`.drift.unit_scales`; the units of a
    bundle none of whose units has 2 checks yet are skipped, logged). ``record``: store each new alert with
    ``kb.add_alert``. Returns the alarms, in unit order, with their ids in the knowledge base.
    """
    if detector not in DETECTORS:
        raise InputError(f"unknown drift detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if warmup < 2:
        raise InputError(f"warmup must be at least 2 checks (a scale needs one difference), got {warmup}")
    by_bundle: dict[str, list[ResidualSeries]] = defaultdict(list)
    for summary in kb.units():
        series = residual_series(kb.unit(summary.unit))
        if series is not None:
            by_bundle[series.bundle_id].append(series)
    # open alerts already stored, by (unit, detector, crossing check): a rescan adds nothing
    stored = {(a.unit, a.detector, a.evidence.get("crossed_record_id")): a.id for a in kb.alerts(open_only=True)}
    alerts: list[Alert] = []
    for bundle_id, group in by_bundle.items():
        scales = _scales(group, warmup, scale)
        if scales is None:
            _log.info("bundle %s: no unit has 2 checks to estimate the residual scale from; %d unit(s) not scanned",
                      bundle_id[:12], len(group))
            continue
        for series, unit_scale in zip(group, scales):
            hit = _first_alarm(series, unit_scale, detector, limit)
            if hit is None:
                continue
            output, result = hit
            alert = Alert(series.unit, bundle_id, detector, output, series.times[result.index],
                          series.record_ids[result.index], result.index + 1, result)
            key = (alert.unit, detector, alert.crossed_record_id)
            if key in stored:
                alert = replace(alert, alert_id=stored[key])
            elif record:
                alert = replace(alert, alert_id=kb.add_alert(alert.unit, detector, alert.evidence()))
            alerts.append(alert)
    return sorted(alerts, key=lambda a: a.unit)


def _scales(group: Sequence[ResidualSeries], warmup: int, scale: float | None) -> np.ndarray | None:
    """``(n_units, n_outputs)`` residual scales of one bundle's units, or None when they cannot be estimated."""
    n_out = group[0].residuals.shape[1]
    if scale is not None:
        return np.full((len(group), n_out), float(scale))
    try:
        return np.column_stack([unit_scales([s.residuals[:, j] for s in group], warmup) for j in range(n_out)])
    except InputError:
        return None

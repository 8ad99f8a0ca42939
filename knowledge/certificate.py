"""Calibration certificates: one self-contained HTML page per unit (``metaedge kb certificate UNIT --out cert.html``).

A certificate states, for a unit's latest calibration: the reference points, the errors *before* adjustment (the
meta-learned prior ``theta0``, i.e. what the uncalibrated unit would read through the bundle) and *after* (the
unit's adapted state), the bundle, run and signing-key identity, the dates, and the unit's in-service checks since.

How the errors are computed: the journal record holds the support points, not the predictions at them, so the
certificate **replays the calibration with the runtime**: it loads the bundle at the path the knowledge base
records (hash-checked, signature-checked against ``METAEDGE_TRUST`` as any load), predicts the reference points
with ``theta0`` (before), and adapts on the same support points with the record's step count (``steps_run``, else
``steps_kept``), continuing from the replayed earlier state where the record is a recalibration
(``start_state_sha256``), then predicts again (after). Adaptation is a deterministic function of bundle, support
points and steps, so this is the state the device computed; the certificate checks it: the replayed state, written
as the device writes it, must have the journaled state file's sha256 (the certificate says so when it does not,
e.g. after another backend's float rounding, or a recalibration whose start state the knowledge base does not
link). In-service checks are shown as journaled (the device's own predictions beside the reference readings).

:class:`Certificate` is a frozen dataclass, so rendering (:func:`render_html`) is testable without a database;
:func:`build_certificate` fills it from a :class:`~metaedge.knowledge.store.KnowledgeBase`.
"""

from __future__ import annotations

import html
import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from metaedge.errors import ExistsError, InputError


@dataclass(frozen=True)
class ReferencePoint:
    """One reference point of the calibration: inputs ``x`` ``(n_inputs,)``, the reference value ``(n_outputs,)``
    and the model's predictions before (prior) and after (adapted) adjustment, physical units."""

    x: tuple[float, ...]
    reference: tuple[float, ...]
    before: tuple[float, ...]
    after: tuple[float, ...]


@dataclass(frozen=True)
class CheckReading:
    """One in-service check reading after the calibration: when, inputs, reference and the device's prediction."""

    time: str
    x: tuple[float, ...]
    reference: tuple[float, ...]
    predicted: tuple[float, ...]


@dataclass(frozen=True)
class Certificate:
    """Everything a calibration certificate states (physical units throughout)."""

    unit: str
    calibrated: str  # ISO 8601 time of the calibration (the adaptation record)
    issued: str  # ISO 8601 time the certificate was made
    device: str  # host id and profile
    input_names: tuple[str, ...]
    input_units: tuple[str, ...]
    output_names: tuple[str, ...]
    output_units: tuple[str, ...]
    bundle_id: str  # sha256 hex of manifest.json
    run_id: str | None
    algo: str | None
    signing_key_id: str | None  # None: the bundle is not signed
    record_id: str  # the adaptation record certified
    state_sha256: str | None
    steps_kept: int
    recalibration: bool  # continued from an earlier adapted state of the unit
    #: the replayed state's file sha256 equals the journaled one (None: the device wrote no state)
    state_verified: bool | None
    points: tuple[ReferencePoint, ...]
    checks: tuple[CheckReading, ...] = ()

    def __post_init__(self) -> None:
        if not self.points:
            raise InputError(f"unit {self.unit}: a certificate needs at least one reference point")

    @property
    def error_before(self) -> np.ndarray:
        """``(k, n_outputs)`` prediction - reference of the prior at the reference points."""
        return np.subtract([p.before for p in self.points], [p.reference for p in self.points])

    @property
    def error_after(self) -> np.ndarray:
        """``(k, n_outputs)`` prediction - reference of the adapted state at the reference points."""
        return np.subtract([p.after for p in self.points], [p.reference for p in self.points])

    @property
    def check_errors(self) -> np.ndarray:
        """``(m, n_outputs)`` prediction - reference of the in-service checks (``(0, n_outputs)`` without)."""
        if not self.checks:
            return np.zeros((0, len(self.output_names)))
        return np.subtract([c.predicted for c in self.checks], [c.reference for c in self.checks])


def _rms(e: np.ndarray) -> np.ndarray:
    """``(n_outputs,)`` root mean square over the rows of ``e`` ``(k, n_outputs)``."""
    return np.sqrt(np.mean(np.square(e), axis=0))


def _fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.6g}"


_CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;color:#111;margin:32px 40px;font-size:14px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:2px solid #234;padding-bottom:3px}
.sub{color:#444;margin-bottom:18px} table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border:1px solid #999;padding:4px 8px;text-align:right} th{background:#dde4ee}
td.l,th.l{text-align:left} td.l:not(.id){white-space:nowrap}
.id{font-family:'DejaVu Sans Mono',monospace;font-size:12px;word-break:break-all}
.summary td{font-weight:bold} .note{color:#333;font-size:12px;margin-top:24px}
"""


def render_html(cert: Certificate) -> str:
    """The certificate as one HTML page: inline CSS, no scripts, no external assets; every value escaped."""
    e = html.escape
    cols_in = [f"{n} [{u}]" for n, u in zip(cert.input_names, cert.input_units)]
    cols_out = [f"{n} [{u}]" for n, u in zip(cert.output_names, cert.output_units)]
    eb, ea = cert.error_before, cert.error_after

    def row(cells: Sequence[str], tag: str = "td", first_left: bool = False) -> str:
        out = [f'<{tag} class="l">{e(cells[0])}</{tag}>' if first_left else f"<{tag}>{e(cells[0])}</{tag}>"]
        return "<tr>" + "".join(out + [f"<{tag}>{e(c)}</{tag}>" for c in cells[1:]]) + "</tr>"

    ident = [("Unit", cert.unit), ("Device", cert.device), ("Calibrated", cert.calibrated),
             ("Certificate issued", cert.issued),
             ("Calibration", "recalibration from the unit's previous state" if cert.recalibration
              else "from the meta-learned prior"),
             ("Bundle (manifest sha256)", cert.bundle_id), ("Training run", cert.run_id or "not registered"),
             ("Meta-learner", cert.algo or "-"),
             ("Signing key id", cert.signing_key_id or "unsigned bundle"),
             ("Adaptation record", cert.record_id), ("Adapted state sha256", cert.state_sha256 or "not written"),
             ("Replay of the calibration", {True: "reproduces the journaled state (same sha256)",
                                            False: "does NOT reproduce the journaled state: errors after are the "
                                                   "replay's, not necessarily the device's",
                                            None: "not checked (no state file journaled)"}[cert.state_verified]),
             ("Adaptation steps kept", str(cert.steps_kept))]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Calibration certificate: {e(cert.unit)}</title><style>{_CSS}</style></head><body>",
        "<h1>Calibration certificate</h1>",
        f'<div class="sub">Unit <b>{e(cert.unit)}</b>, calibrated {e(cert.calibrated)}; '
        f"{len(cert.points)} reference point(s); metaedge few-shot calibration</div>",
        "<h2>Identity</h2><table>",
        *(f'<tr><th class="l">{e(k)}</th><td class="l id">{e(v)}</td></tr>' for k, v in ident),
        "</table>", "<h2>Reference points</h2><table>",
        row(["#", *cols_in, *(f"reference {c}" for c in cols_out),
             *(f"error before {c}" for c in cols_out), *(f"error after {c}" for c in cols_out)], "th"),
    ]
    for i, p in enumerate(cert.points):
        parts.append(row([str(i + 1), *map(_fmt, p.x), *map(_fmt, p.reference), *map(_fmt, eb[i]),
                          *map(_fmt, ea[i])]))
    blank = [""] * (len(cols_in) + len(cols_out))
    parts += ['<tr class="summary">' + row(["RMS", *blank, *map(_fmt, _rms(eb)), *map(_fmt, _rms(ea))])[4:],
              '<tr class="summary">' + row(["max |error|", *blank, *map(_fmt, np.abs(eb).max(0)),
                                            *map(_fmt, np.abs(ea).max(0))])[4:], "</table>"]
    parts.append("<h2>In-service checks</h2>")
    if cert.checks:
        ce = cert.check_errors
        parts += ["<table>", row(["time", *cols_in, *(f"reference {c}" for c in cols_out),
                                  *(f"error {c}" for c in cols_out)], "th", first_left=True)]
        parts += [row([c.time, *map(_fmt, c.x), *map(_fmt, c.reference), *map(_fmt, ce[i])], first_left=True)
                  for i, c in enumerate(cert.checks)]
        parts.append('<tr class="summary">' + row(["RMS", *blank, *map(_fmt, _rms(ce))], first_left=True)[4:])
        parts.append("</table>")
    else:
        parts.append("<p>No in-service check since this calibration.</p>")
    parts.append(
        '<p class="note">Error = model reading - reference value, in the output\'s physical unit. Before: the '
        "bundle's meta-learned prior (theta0) at the reference points; after: the unit's adapted state, replayed "
        "with the metaedge runtime from the journaled support points and steps. In-service checks: the device's "
        "own predictions as journaled. The bundle is identified by the sha256 of its manifest, which holds the "
        "sha256 of every file in it.</p></body></html>")
    return "\n".join(parts) + "\n"


def write_certificate(cert: Certificate, out: str | Path) -> Path:
    """Write :func:`render_html` to ``out`` atomically; an existing file is refused (never overwritten)."""
    from ..atomic import atomic_write_text

    out = Path(out)
    if out.exists():
        raise ExistsError(f"{out} already exists; choose another --out or remove it first")
    return atomic_write_text(out, render_html(cert))


#: headless Chromium flags for a reproducible, offline screenshot of a certificate (A4-ish portrait window)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--window-size=1000,1400")


def screenshot(html_path: str | Path, png_path: str | Path, profile_dir: str | Path) -> Path:
    """Render ``html_path`` to ``png_path`` (1000 x 1400) with Debian's headless ``chromium``, using
    ``profile_dir`` as its throw-away user-data folder; :class:`subprocess.CalledProcessError` when it fails."""
    png_path = Path(png_path).resolve()
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--screenshot={png_path}",
                    Path(html_path).resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return png_path


# --------------------------------------------------------------------------------------------- from the KB
def _chain(adaptations: Sequence[Any]) -> list[Any]:
    """The unit's last adaptation and the earlier ones it continued from (oldest first), by state digests.

    ``start_state_sha256`` is the optional field of the journal record a recalibration carries; a row without it
    (or whose start state is not among the unit's records) starts from the prior.
    """
    rows = sorted(adaptations, key=lambda a: a.time)
    by_state = {a.state_sha256: a for a in rows if a.state_sha256}
    chain = [rows[-1]]
    while (start := getattr(chain[-1], "start_state_sha256", None)) and start in by_state \
            and by_state[start] not in chain:
        chain.append(by_state[start])
    return chain[::-1]


def replay(model: Any, chain: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, Any]:
    """Prior and adapted predictions ``(k, n_outputs)`` at the last adaptation's support points, and the replayed
    :class:`~metaedge.runtime.model.Adapted`.

    ``model``: a :class:`metaedge.runtime.Model` of the adaptations' bundle; ``chain``: adaptation rows oldest
    first, each continuing from the one before (the first from ``theta0``). Each is replayed with its
    ``steps_run`` (the guard rolls back the same steps again), or ``steps_kept`` where the row has no step count
    run.
    """
    from metaedge.runtime.model import Adapted

    adapted = None
    for a in chain:
        steps = getattr(a, "steps_run", None)
        adapted = model.adapt(np.asarray(a.support_x), np.asarray(a.support_y),
                              steps=a.steps_kept if steps is None else steps,
                              start=None if adapted is None else adapted.theta)
    xs = np.asarray(chain[-1].support_x)
    return Adapted(model, model.theta0).predict(xs), adapted.predict(xs), adapted


def _reproduces(adapted: Any, state_sha256: str | None) -> bool | None:
    """Whether the replayed state, written as the device writes it, has the journaled file digest."""
    if not state_sha256:
        return None
    with tempfile.TemporaryDirectory(prefix="metaedge-replay-") as tmp:
        adapted.save(Path(tmp) / "replayed.state")
    return adapted.state_sha256 == state_sha256


def build_certificate(kb: Any, unit: str, now: datetime | None = None, trust: Sequence[Any] | None = None
                      ) -> Certificate:
    """The certificate of ``unit``'s latest calibration, from the knowledge base ``kb`` and the bundle it records.

    Raises :class:`InputError` when the unit has no adaptation; the bundle loads as any bundle (a missing or
    tampered one is refused with one sentence; ``trust``: the public keys it must be signed by, None:
    ``METAEDGE_TRUST``'s).
    """
    from metaedge.runtime.model import Model

    detail = kb.unit(unit)
    if not detail.adaptations:
        raise InputError(f"unit {unit} has no calibration (adaptation record) in the knowledge base; ingest its "
                         "journal first (metaedge kb ingest)")
    chain = _chain(detail.adaptations)
    last = chain[-1]
    info = kb.bundle(last.bundle_id)
    model = Model.load(info.path, trust=trust)
    if model.classification:
        raise InputError(f"unit {unit} was adapted with a classification bundle; calibration certificates state "
                         "errors in physical units, so they need a regression bundle")
    before, after, adapted = replay(model, chain)
    m = model.bundle.manifest
    points = tuple(ReferencePoint(tuple(x), tuple(y), tuple(map(float, b)), tuple(map(float, a)))
                   for x, y, b, a in zip(last.support_x, last.support_y, before, after))
    checks = tuple(CheckReading(c.time, tuple(x), tuple(r), tuple(p))
                   for c in sorted(detail.checks, key=lambda c: c.time)
                   if c.time >= last.time and c.bundle_id == last.bundle_id
                   for x, r, p in zip(c.x, c.reference, c.predicted))
    issued = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return Certificate(unit=unit, calibrated=last.time, issued=issued, device=_device(last.device),
                       input_names=m.input.names, input_units=m.input.units, output_names=m.output.names,
                       output_units=m.output.units, bundle_id=last.bundle_id, run_id=info.run_id, algo=info.algo,
                       signing_key_id=info.signing_key_id, record_id=last.record_id, state_sha256=last.state_sha256,
                       steps_kept=last.steps_kept, recalibration=len(chain) > 1,
                       state_verified=_reproduces(adapted, last.state_sha256), points=points, checks=checks)


def _device(device: Any) -> str:
    """A row's device as text: ``host (profile)`` from a :class:`DeviceInfo`, or the text the row holds."""
    if hasattr(device, "host_id"):
        return f"{device.host_id} ({device.profile or 'no profile'})"
    return str(device)

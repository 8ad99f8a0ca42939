"""Drift alerts and certificates over a real knowledge base (SQLite): journals written by the runtime, ingested,
scanned (knowledge/alerts.py), `metaedge kb alerts` and `metaedge kb certificate`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from isolation import run_without

pytest.importorskip("sqlalchemy", reason="the knowledge base needs the kb extra (sqlalchemy, alembic)")

from metaedge.cli import main  # noqa: E402
from metaedge.errors import InputError  # noqa: E402
from metaedge.knowledge import KnowledgeBase  # noqa: E402
from metaedge.knowledge.alerts import residual_series, scan  # noqa: E402
from metaedge.knowledge.certificate import build_certificate  # noqa: E402
from metaedge.runtime.journal import append  # noqa: E402
from metaedge.runtime.model import Adapted, Model  # noqa: E402

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
WEEKS = 20
STEP_WEEK = 12  # the drifting unit's zero moves at this check


def week(i: int) -> str:
    return (T0 + timedelta(weeks=i, hours=1)).isoformat()


def residuals(unit: int) -> np.ndarray:
    """Check residuals (kPa) of unit ``unit``: seeded noise of 0.05 kPa; unit 0 steps by +2 kPa at STEP_WEEK."""
    r = 0.05 * np.random.default_rng(unit).standard_normal(WEEKS)
    if unit == 0:
        r[STEP_WEEK:] += 2.0
    return r


@pytest.fixture(scope="module")
def fleet(small_bundle, tmp_path_factory):
    """A knowledge base with 6 units of the session's pressure bundle: each calibrated from 3 points by the runtime
    (state saved, record journaled), then checked weekly at 2 reference points; unit u0 drifts."""
    root = tmp_path_factory.mktemp("fleet")
    model = Model.load(small_bundle)
    journal = root / "line.jsonl"
    rng = np.random.default_rng(0)
    adapted = {}
    for u in range(6):
        xs = np.column_stack([rng.uniform(20, 70, 3), rng.uniform(20, 30, 3)])
        ys = rng.uniform(10, 90, (3, 1))
        a = model.adapt(xs, ys, save=root / f"u{u}.state")
        append(journal, replace(a.record(f"u{u}"), time=T0.isoformat()))
        for i, r in enumerate(residuals(u)):
            x = np.column_stack([rng.uniform(20, 70, 2), rng.uniform(20, 30, 2)])
            pred = a.predict(x)
            check = a.check(x, pred + r)  # the reference reads r above the unit's prediction
            append(journal, replace(check, unit=f"u{u}", time=week(i)))
        adapted[f"u{u}"] = a
    url = f"sqlite:///{root / 'kb.db'}"
    with KnowledgeBase.init(url) as kb:
        kb.register_bundle(small_bundle)
        kb.ingest(journal)
    return url, root, model, adapted


def test_residual_series_reads_the_checks_in_order(fleet):
    url, *_ = fleet
    with KnowledgeBase(url) as kb:
        series = residual_series(kb.unit("u3"))
    assert series.times == tuple(week(i) for i in range(WEEKS))
    # float32 rounding of the journaled readings only
    assert series.residuals[:, 0] == pytest.approx(residuals(3), abs=2e-3)


@pytest.mark.parametrize("detector", ["cusum", "page-hinkley", "threshold"])
def test_scan_flags_only_the_drifting_unit_at_the_step(fleet, detector, tmp_path):
    url, *_ = fleet
    with KnowledgeBase(url) as kb:
        found = scan(kb, detector=detector, record=False)
    assert [a.unit for a in found] == ["u0"]
    alert = found[0]
    # a 2 kPa step is 40 noise sigmas: every detector crosses at the first drifted check
    assert alert.crossed_time == week(STEP_WEEK) and alert.n_checks == STEP_WEEK + 1 and alert.alert_id is None
    assert alert.drift.evidence.direction == "up"
    ev = alert.evidence()
    assert ev["residuals"][-1] == pytest.approx(residuals(0)[STEP_WEEK], abs=2e-3)
    assert len(ev["residuals"]) == 8 and ev["statistic"] > ev["threshold"]
    # the scale is the unit's warm-up scatter shrunk toward the fleet's: the order of the 0.05 kPa noise
    assert 0.03 < ev["scale"] < 0.08


def test_alerts_are_stored_once_and_a_recalibration_clears_the_unit(small_bundle, fleet, tmp_path):
    url, root, model, adapted = fleet
    db = tmp_path / "kb.db"
    db.write_bytes(Path(url.removeprefix("sqlite:///")).read_bytes())  # a copy: the module's KB stays as it is
    url = f"sqlite:///{db}"
    with KnowledgeBase(url) as kb:
        first = scan(kb)
        again = scan(kb)
        assert [a.alert_id for a in again] == [a.alert_id for a in first] and first[0].alert_id is not None
        stored = kb.alerts()
        assert len(stored) == 1 and stored[0].unit == "u0" and stored[0].detector == "cusum"
        assert stored[0].evidence["crossed_time"] == week(STEP_WEEK)
        # recalibrate u0 from its last state with 3 new points (after the drift): later checks start afresh
        xs = np.array([[30.0, 25.0], [45.0, 25.0], [60.0, 25.0]])
        re = model.adapt(xs, adapted["u0"].predict(xs) - 2.0, start=adapted["u0"], save=tmp_path / "u0b.state")
        j = tmp_path / "recal.jsonl"
        append(j, replace(re.record("u0"), time=week(WEEKS)))
        for i in range(3):
            x = np.array([[40.0 + i, 24.0]])
            append(j, replace(re.check(x, re.predict(x) + 0.01 * i), unit="u0", time=week(WEEKS + 1 + i)))
        kb.ingest(j)
        assert scan(kb) == []
        assert len(residual_series(kb.unit("u0")).times) == 3


def test_kb_alerts_command(fleet):
    url, *_ = fleet
    runner = CliRunner()
    out = runner.invoke(main, ["kb", "alerts", "--db", url, "--detector", "page-hinkley", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [a["unit"] for a in data] == ["u0"] and data[0]["detector"] == "page-hinkley"
    assert data[0]["crossed_time"] == week(STEP_WEEK) and data[0]["parameters"] == {"delta": 0.5, "lambda": 5.0}
    text = runner.invoke(main, ["kb", "alerts", "--db", url])
    assert text.exit_code == 0 and "1 unit(s) due for recalibration (cusum)" in text.output
    assert "u0" in text.output and "--start" in text.output
    bad = runner.invoke(main, ["kb", "alerts", "--db", url, "--scale", "-1"])
    assert bad.exit_code == 1 and "positive" in bad.output
    # a threshold above the drifting unit's statistic silences it; the statistic is in the evidence
    high = data[0]["statistic"] * 1.01
    quiet = runner.invoke(main, ["kb", "alerts", "--db", url, "--detector", "page-hinkley", "--threshold",
                                 str(high), "--json"])
    assert quiet.exit_code == 0, quiet.output
    later = json.loads(quiet.output)  # not at the step's check any more: later (the statistic keeps growing) or never
    assert later == [] or later[0]["crossed_time"] > week(STEP_WEEK)
    bad = runner.invoke(main, ["kb", "alerts", "--db", url, "--threshold", "0"])
    assert bad.exit_code == 1 and "threshold must be a positive" in bad.output
    bad = runner.invoke(main, ["kb", "alerts", "--db", url, "--warmup", "1"])
    assert bad.exit_code == 1 and "warmup must be at least 2" in bad.output


def test_certificate_from_the_knowledge_base(fleet, small_bundle, tmp_path):
    url, root, model, adapted = fleet
    with KnowledgeBase(url) as kb:
        cert = build_certificate(kb, "u2", now=datetime(2026, 6, 1, tzinfo=timezone.utc))
    device = Adapted.load(model, root / "u2.state")
    xs = np.array([p.x for p in cert.points])
    # after = the device's own state at the reference points; before = the prior's
    assert np.array([p.after for p in cert.points]) == pytest.approx(device.predict(xs), abs=1e-3)
    assert np.array([p.before for p in cert.points]) == pytest.approx(
        Adapted(model, model.theta0).predict(xs), abs=1e-3)
    assert np.sqrt(np.mean(cert.error_after**2)) < np.sqrt(np.mean(cert.error_before**2))
    assert cert.bundle_id == json.loads(json.dumps(model.bundle_ref().manifest_sha256))
    assert cert.state_sha256 == adapted["u2"].state_sha256 and cert.calibrated == T0.isoformat()
    assert cert.state_verified is True  # the replay wrote the very bytes the device wrote
    assert len(cert.checks) == 2 * WEEKS and cert.issued.startswith("2026-06-01")
    out = CliRunner().invoke(main, ["kb", "certificate", "u2", "--db", url, "--out", str(tmp_path / "u2.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "u2.html").read_text()
    assert "u2" in page and cert.bundle_id in page and "40 in-service check reading(s)" in out.output
    again = CliRunner().invoke(main, ["kb", "certificate", "u2", "--db", url, "--out", str(tmp_path / "u2.html")])
    assert again.exit_code == 1 and "already exists" in again.output
    unknown = CliRunner().invoke(main, ["kb", "certificate", "u9", "--db", url, "--out", str(tmp_path / "u9.html")])
    assert unknown.exit_code == 1 and "u9" in unknown.output and not (tmp_path / "u9.html").exists()


def test_a_unit_with_checks_but_no_calibration_has_no_certificate(fleet, tmp_path):
    url, root, model, adapted = fleet
    db = tmp_path / "kb.db"
    db.write_bytes(Path(url.removeprefix("sqlite:///")).read_bytes())
    j = tmp_path / "checks.jsonl"
    x = np.array([[40.0, 24.0]])
    append(j, replace(adapted["u1"].check(x, adapted["u1"].predict(x)), unit="spare", time=week(3)))
    with KnowledgeBase(f"sqlite:///{db}") as kb:
        kb.ingest(j)
        with pytest.raises(InputError, match="unit spare has no calibration"):
            build_certificate(kb, "spare")


def test_drift_modules_never_import_torch_sdk_or_export():
    done = run_without("""
        import metaedge.knowledge.alerts, metaedge.knowledge.certificate, metaedge.knowledge.drift
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_certificate_of_a_recalibration_replays_the_chain(fleet, tmp_path):
    url, root, model, adapted = fleet
    db = tmp_path / "kb.db"
    db.write_bytes(Path(url.removeprefix("sqlite:///")).read_bytes())
    xs = np.array([[30.0, 25.0], [45.0, 25.0], [60.0, 25.0]])
    start = Adapted.load(model, root / "u4.state")
    re = model.adapt(xs, start.predict(xs) - 0.5, start=start, save=tmp_path / "u4b.state")
    j = tmp_path / "recal.jsonl"
    append(j, replace(re.record("u4"), time=week(WEEKS)))
    with KnowledgeBase(f"sqlite:///{db}") as kb:
        kb.ingest(j)
        cert = build_certificate(kb, "u4")
    assert cert.recalibration and cert.state_verified is True
    assert np.array([p.after for p in cert.points]) == pytest.approx(re.predict(xs), abs=1e-3)

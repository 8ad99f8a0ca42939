"""The knowledge base (metaedge.knowledge, `metaedge kb`): one suite on SQLite and on a real PostgreSQL server.

The PostgreSQL server is started once per session in a temporary folder (tests/pg_server.py); each test gets a
fresh database. Where PostgreSQL is not installed the PostgreSQL half skips with the reason, unless
METAEDGE_REQUIRE_SERVICES=1 (.ci/run after installing it), where it fails.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pg_server
import pytest
from click.testing import CliRunner
from isolation import run_without

from metaedge.cli import main
from metaedge.knowledge import AdaptationRow, CheckRow, DataFile, FileIngest, KnowledgeBase, KnowledgeError, UnitSummary
from metaedge.runtime.journal import append
from metaedge.runtime.journal_records import AdaptationRecord, BundleRef, CheckRecord, DeviceInfo, JournalError

DEVICE = DeviceInfo("cpu-x86_64", "line-1")
OTHER_BUNDLE = "0" * 63 + "1"


@pytest.fixture(scope="session")
def postgres():
    reason = pg_server.unavailable()
    if reason is not None:
        if pg_server.required():
            pytest.fail(f"METAEDGE_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    try:
        server = pg_server.PostgresServer.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        if pg_server.required():
            raise
        pytest.skip(f"PostgreSQL could not be started here: {e}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def kb_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kb.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def kb(kb_url):
    with KnowledgeBase.init(kb_url) as base:
        yield base


@pytest.fixture(scope="module")
def bundle_dir(small_bundle):
    """The session's sensor-pressure bundle (inputs bridge_output, temperature; output pressure) and its run."""
    return Path(small_bundle)


def bundle_id_of(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def adaptation(record_id: str, unit: str, time: str, xs, ys, bundle: str = OTHER_BUNDLE) -> AdaptationRecord:
    return AdaptationRecord(record_id, unit, DEVICE, BundleRef(bundle, None), time,
                            tuple(tuple(map(float, r)) for r in xs), tuple(tuple(map(float, r)) for r in ys),
                            steps_run=5, steps_kept=4, loss_before=2.5, loss_after=0.25, state_sha256="ab" * 32)


def check(record_id: str, unit: str, time: str, xs, ref, pred, bundle: str = OTHER_BUNDLE) -> CheckRecord:
    rows = lambda m: tuple(tuple(map(float, r)) for r in m)  # noqa: E731
    return CheckRecord(record_id, unit, DEVICE, BundleRef(bundle, None), time, rows(xs), rows(ref), rows(pred),
                       state_sha256="ab" * 32)


def journal(path: Path, records) -> Path:
    for r in records:
        append(path, r)
    return path


def fleet(bundle: str = OTHER_BUNDLE):
    """Three units: u1 adapted twice (the second time with one repeated point) and checked once, u2 adapted once,
    u3 only checked."""
    return [
        adaptation("a1", "u1", "2026-11-01T08:00:00+00:00", [[1, 20], [2, 21], [3, 22]], [[10], [20], [30]], bundle),
        adaptation("a2", "u1", "2026-11-08T08:00:00+00:00", [[3, 22], [4, 23]], [[30], [41]], bundle),
        check("c1", "u1", "2026-11-15T08:00:00+00:00", [[5, 24]], [[52]], [[50.5]], bundle),
        adaptation("a3", "u2", "2026-11-02T09:30:00+00:00", [[1.5, 19], [2.5, 18]], [[14], [26]], bundle),
        check("c2", "u3", "2026-11-03T10:00:00+00:00", [[7, 30], [8, 31]], [[70], [80]], [[69], [81]], bundle),
    ]


# --- schema ----------------------------------------------------------------------------------------------------

def test_init_is_idempotent_and_the_migration_builds_exactly_schema_py(kb_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from metaedge.knowledge.schema import REVISION, metadata
    from metaedge.knowledge.store import schema_head

    KnowledgeBase.init(kb_url).close()
    with KnowledgeBase.init(kb_url) as kb, kb.engine.connect() as conn:  # again: upgrade head is a no-op
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []
        assert ctx.get_current_revision() == schema_head() == REVISION


def test_sqlite_connections_have_wal_busy_timeout_and_foreign_keys(tmp_path):
    with KnowledgeBase.init(f"sqlite:///{tmp_path / 'kb.db'}") as kb, kb.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 120_000


def test_url_resolution_and_missing_database(tmp_path, monkeypatch):
    from metaedge.knowledge.db import resolve_url

    monkeypatch.delenv("METAEDGE_KB", raising=False)
    assert resolve_url(None) == "sqlite:///kb.db"
    monkeypatch.setenv("METAEDGE_KB", "postgresql://me@db.example/fleet")
    assert resolve_url(None) == "postgresql+psycopg://me@db.example/fleet"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(KnowledgeError, match="runs on SQLite .* or PostgreSQL"):
        resolve_url("mysql://me@host/db")
    with pytest.raises(KnowledgeError, match=r"no knowledge base at .*none\.db; create it with `metaedge kb init"):
        KnowledgeBase(f"sqlite:///{tmp_path / 'none.db'}")


# --- ingest ----------------------------------------------------------------------------------------------------

def test_ingest_is_idempotent_across_files_and_formats(kb, tmp_path):
    records = fleet()
    first = journal(tmp_path / "line.jsonl", records[:3])
    second = journal(tmp_path / "line.journal", records[2:])  # SQLite journal; overlaps c1
    result = kb.ingest(first, second)
    assert result.files == (FileIngest(str(first), 3, 0), FileIngest(str(second), 2, 1))
    again = kb.ingest(second, first)
    assert (again.added, again.duplicates) == (0, 6)
    assert kb.units() == [
        UnitSummary("u1", 2, 1, "2026-11-15T08:00:00+00:00", OTHER_BUNDLE),
        UnitSummary("u2", 1, 0, "2026-11-02T09:30:00+00:00", OTHER_BUNDLE),
        UnitSummary("u3", 0, 1, "2026-11-03T10:00:00+00:00", OTHER_BUNDLE),
    ]


def test_a_file_with_a_corrupt_record_adds_nothing(kb, tmp_path):
    path = journal(tmp_path / "bad.jsonl", fleet()[:2])
    with path.open("a") as f:
        f.write('{"schema": "metaedge.journal/1", "kind": "adaptation", "record_id": "x"}\n')
    journal(path, fleet()[3:])
    with pytest.raises(JournalError, match=r"bad\.jsonl, line 3: field device is missing"):
        kb.ingest(path)
    assert kb.units() == []
    with kb.engine.connect() as conn:
        from metaedge.knowledge.schema import adaptations, checks, deployments, devices

        for table in (adaptations, checks, devices, deployments):
            assert conn.execute(table.select()).first() is None


def test_a_torn_last_line_is_skipped_and_counted(kb, tmp_path):
    path = journal(tmp_path / "torn.jsonl", fleet()[:2])
    with path.open("a") as f:
        f.write(fleet()[2].to_json()[:40])  # the device lost power mid-append: no newline
    assert kb.ingest(path).files == (FileIngest(str(path), 2, 0, torn_lines=1),)


def _ingest_in_child(url: str, files: list[str], queue) -> None:
    try:
        with KnowledgeBase(url) as kb:
            queue.put(("ok", kb.ingest(*files).added))
    except Exception as e:  # reported to the parent, which fails the test with it
        queue.put(("error", f"{type(e).__name__}: {e}"))


def test_concurrent_ingests_lose_nothing_double_nothing_and_never_lock(kb_url, tmp_path):
    import multiprocessing as mp

    records = [adaptation(f"p{i:05d}", f"u{i % 7}", f"2026-11-01T08:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                          [[i, 20]], [[i]]) for i in range(1200)]
    files = [str(journal(tmp_path / f"j{i}.jsonl", records[i * 150:(i + 1) * 150])) for i in range(8)]
    KnowledgeBase.init(kb_url).close()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    plans = [[files[p], files[p + 4], files[(p + 1) % 4]] for p in range(4)]  # each file reaches 1 or 2 processes
    children = [ctx.Process(target=_ingest_in_child, args=(kb_url, plan, queue)) for plan in plans]
    for c in children:
        c.start()
    outcomes = [queue.get(timeout=120) for _ in children]
    for c in children:
        c.join()
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    assert sum(added for _, added in outcomes) == 1200
    with KnowledgeBase(kb_url) as kb:
        assert sum(u.n_adaptations for u in kb.units()) == 1200


def test_a_failure_while_writing_a_file_rolls_the_whole_file_back(kb, tmp_path, monkeypatch):
    from metaedge.knowledge import ingest

    kb.ingest(journal(tmp_path / "first.jsonl", fleet()[:1]))
    real = ingest._upsert_seen

    def fail_at_deployments(conn, table, *args, **kwargs):  # after the file's adaptations and checks are written
        if table.name == "deployments":
            raise OSError("disk full")
        return real(conn, table, *args, **kwargs)

    monkeypatch.setattr(ingest, "_upsert_seen", fail_at_deployments)
    with pytest.raises(OSError, match="disk full"):
        kb.ingest(journal(tmp_path / "rest.jsonl", fleet()[1:]))
    monkeypatch.undo()
    assert [(u.unit, u.n_adaptations, u.n_checks) for u in kb.units()] == [("u1", 1, 0)]
    assert kb.ingest(tmp_path / "rest.jsonl").files[0] == FileIngest(str(tmp_path / "rest.jsonl"), 4, 0)


def test_devices_and_deployments_span_first_and_last_seen(kb, tmp_path):
    from metaedge.knowledge.schema import deployments, devices

    kb.ingest(journal(tmp_path / "a.jsonl", fleet()[:2]))
    kb.ingest(journal(tmp_path / "b.jsonl", fleet()[3:]))
    with kb.engine.connect() as conn:
        (dev,) = conn.execute(devices.select()).all()
        (dep,) = conn.execute(deployments.select()).all()
    assert (dev.host_id, dev.profile, dev.first_seen, dev.last_seen) == (
        "line-1", "cpu-x86_64", "2026-11-01T08:00:00+00:00", "2026-11-08T08:00:00+00:00")
    assert (dep.bundle_id, dep.host_id, dep.first_seen, dep.last_seen) == (
        OTHER_BUNDLE, "line-1", "2026-11-01T08:00:00+00:00", "2026-11-08T08:00:00+00:00")


# --- show and lineage ------------------------------------------------------------------------------------------

def test_show_returns_every_record_of_the_unit_exactly(kb, tmp_path):
    kb.ingest(journal(tmp_path / "j.jsonl", fleet()))
    detail = kb.unit("u1")
    assert detail.summary == UnitSummary("u1", 2, 1, "2026-11-15T08:00:00+00:00", OTHER_BUNDLE)
    assert detail.adaptations == (
        AdaptationRow("a1", "u1", OTHER_BUNDLE, "line-1", "2026-11-01T08:00:00+00:00",
                      ((1.0, 20.0), (2.0, 21.0), (3.0, 22.0)), ((10.0,), (20.0,), (30.0,)), 4, 2.5, 0.25, "ab" * 32,
                      steps_run=5),
        AdaptationRow("a2", "u1", OTHER_BUNDLE, "line-1", "2026-11-08T08:00:00+00:00", ((3.0, 22.0), (4.0, 23.0)),
                      ((30.0,), (41.0,)), 4, 2.5, 0.25, "ab" * 32, steps_run=5))
    assert detail.checks == (CheckRow("c1", "u1", OTHER_BUNDLE, "2026-11-15T08:00:00+00:00", ((5.0, 24.0),),
                                      ((52.0,),), ((50.5,),), "ab" * 32),)
    as_json = json.loads(json.dumps(detail.to_dict()))
    assert [a["record_id"] for a in as_json["adaptations"]] == ["a1", "a2"]
    assert as_json["n_adaptations"] == 2 and as_json["adaptations"][1]["support_y"] == [[30.0], [41.0]]
    with pytest.raises(KnowledgeError, match=r"unit 'u9' is not in the knowledge base \(3 units are"):
        kb.unit("u9")


def test_lineage_runs_from_unit_to_data_hashes(kb, tmp_path, bundle_dir):
    bid = kb.register_bundle(bundle_dir, alias="champion")
    run_dir = bundle_dir.parent / "run"
    config = json.loads((run_dir / "config.json").read_text())["train"]
    settings = {"family": config["family"], "options": config["family_options"], "seed": config["seed"]}
    generated = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    kb.ingest(journal(tmp_path / "j.jsonl", fleet(bid)[:2]))

    line = kb.lineage("u1")
    assert line.unit == "u1" and [a.record_id for a in line.adaptations] == ["a1", "a2"]
    (link,) = line.bundles
    assert (link.bundle_id, link.n_adaptations, link.n_units) == (bid, 2, 1)
    assert link.bundle.id == bid == bundle_id_of(bundle_dir)
    assert link.bundle.aliases == ("champion",) and link.bundle.algo == "metasgd"
    assert link.bundle.input_names == ("bridge_output", "temperature")
    assert link.run.id == hashlib.sha256((run_dir / "config.json").read_bytes()).hexdigest()
    assert link.run.path == str(run_dir.resolve()) and link.bundle.run_id == link.run.id
    assert link.run.data == (DataFile("generated:sensor-pressure", generated, None),)
    assert kb.bundle("champion") == kb.bundle(bid[:8]) == link.bundle

    by_bundle = kb.lineage("champion")
    assert by_bundle.unit is None and by_bundle.adaptations == ()
    assert (by_bundle.bundles[0].n_adaptations, by_bundle.bundles[0].run) == (2, link.run)


def test_records_of_an_unregistered_bundle_are_kept_and_linked_once_it_is_registered(kb, tmp_path, bundle_dir):
    bid = bundle_id_of(bundle_dir)
    kb.ingest(journal(tmp_path / "j.jsonl", fleet(bid)[3:4]))
    (early,) = kb.lineage("u2").bundles
    assert (early.bundle_id, early.bundle, early.run) == (bid, None, None)
    assert kb.lineage(bid).bundles[0].bundle is None  # a full id that records name works before registration
    with pytest.raises(KnowledgeError, match="no registered bundle is called 'champion'"):
        kb.bundle("champion")
    kb.register_bundle(bundle_dir)
    (late,) = kb.lineage("u2").bundles
    assert late.bundle.id == bid and late.run.id == late.bundle.run_id


def test_a_bundle_registered_before_its_run_is_linked_when_the_run_is(kb, tmp_path, bundle_dir):
    import shutil

    from metaedge.knowledge.schema import bundles

    bid = kb.register_bundle(bundle_dir)
    run_id = kb.bundle(bid).run_id
    with kb._writer.begin() as conn:  # as if the run directory had not been on this machine at registration
        conn.execute(bundles.update().values(run_id=None))
    assert kb.bundle(bid).run_id is None
    assert kb.register_run(bundle_dir.parent / "run") == run_id
    assert kb.bundle(bid).run_id == run_id
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    assert kb.register_bundle(copy) == bid  # same manifest bytes: same bundle, path refreshed
    assert kb.bundle(bid).path == str(copy.resolve())


# --- the per-unit table ----------------------------------------------------------------------------------------

def test_export_units_round_trips_through_the_table_family(kb, tmp_path, bundle_dir):
    from metaedge.sdk.tasks import make_family

    bid = kb.register_bundle(bundle_dir)
    kb.ingest(journal(tmp_path / "j.jsonl", fleet(bid)))
    kb.ingest(journal(tmp_path / "other.jsonl", [adaptation("z1", "u1", "2026-11-20T08:00:00+00:00",
                                                            [[9, 9]], [[9]], OTHER_BUNDLE)]))
    out = kb.export_units(tmp_path / "fleet.csv", bundle=bid, min_points=2)
    assert out.read_text().splitlines()[0] == "unit,bridge_output,temperature,pressure"
    family = make_family("table", path=str(out), group="unit", x_columns=["bridge_output", "temperature"],
                         y_column="pressure", test_fraction=0.34)
    expected = {  # u1: a1's three points, a2's new one (its repeat of (3, 22) is written once), c1's reference
        "u1": ([[1, 20], [2, 21], [3, 22], [4, 23], [5, 24]], [10, 20, 30, 41, 52]),
        "u2": ([[1.5, 19], [2.5, 18]], [14, 26]),
        "u3": ([[7, 30], [8, 31]], [70, 80]),
    }
    assert sorted(map(str, family.units())) == sorted(expected)
    for unit, (x, y) in expected.items():
        got_x, got_y = family.unit_data(unit)
        np.testing.assert_array_equal(got_x, np.array(x, np.float32))
        np.testing.assert_array_equal(got_y.ravel(), np.array(y, np.float32))
    kb.export_units(tmp_path / "big.csv", bundle=bid, min_points=3)
    assert {line.split(",")[0] for line in (tmp_path / "big.csv").read_text().splitlines()[1:]} == {"u1"}
    with pytest.raises(KnowledgeError, match=r"records name bundle 000000000000, which is not registered"):
        kb.export_units(tmp_path / "all.csv")


# --- decisions and alerts --------------------------------------------------------------------------------------

def test_evaluations_and_alerts_are_stored(kb, tmp_path, bundle_dir):
    bid = kb.register_bundle(bundle_dir, alias="champion")
    kb.set_alias("candidate", bid[:10])
    assert kb.bundle("candidate").aliases == ("candidate", "champion")
    figures = {"fleet_rmse": {"champion": 1.5, "candidate": 1.0}, "units": 12}
    eid = kb.record_evaluation("candidate", "champion", figures, "kept champion")
    (row,) = kb.evaluations()
    assert (row.id, row.candidate, row.champion, row.figures, row.decision) == (eid, bid, bid, figures,
                                                                                "kept champion")
    with pytest.raises(KnowledgeError, match="finite numbers"):
        kb.record_evaluation("candidate", "champion", {"x": float("nan")}, "promoted")
    kb.ingest(journal(tmp_path / "j.jsonl", fleet()[:1]))
    aid = kb.add_alert("u1", "page-hinkley(delta=0.1, lambda=5)", {"residual_mean": 0.8})
    assert [(a.id, a.unit, a.evidence, a.closed) for a in kb.alerts()] == [(aid, "u1", {"residual_mean": 0.8}, None)]
    kb.close_alert(aid)
    assert kb.alerts() == [] and kb.alerts(open_only=False)[0].closed is not None
    with pytest.raises(KnowledgeError, match="unit 'nope' is not in the knowledge base"):
        kb.add_alert("nope", "cusum", {})


# --- the command line ------------------------------------------------------------------------------------------

def test_kb_commands_end_to_end(kb_url, tmp_path, bundle_dir):
    run = CliRunner().invoke
    db = ["--db", kb_url]
    assert run(main, ["kb", "init", *db]).exit_code == 0
    out = run(main, ["kb", "register", str(bundle_dir.parent / "run"), *db])
    assert out.exit_code == 0 and out.output.startswith(f"run {kb_run_id(bundle_dir)} registered"), out.output
    out = run(main, ["kb", "register", str(bundle_dir), "--alias", "champion", *db])
    assert out.exit_code == 0, out.output
    bid = bundle_id_of(bundle_dir)
    assert bid in out.output
    path = journal(tmp_path / "j.jsonl", fleet(bid))
    out = run(main, ["kb", "ingest", str(path), *db])
    assert out.exit_code == 0 and "5 added, 0 duplicates" in out.output, out.output
    assert "0 added, 5 duplicates" in run(main, ["kb", "ingest", str(path), *db]).output
    table = run(main, ["kb", "units", *db]).output.splitlines()
    assert table[0].split() == ["unit", "adaptations", "checks", "last", "bundle"]
    assert table[2].split() == ["u1", "2", "1", "2026-11-15T08:00:00+00:00", bid[:12]]
    shown = json.loads(run(main, ["kb", "show", "u1", "--json", *db]).output)
    assert [a["record_id"] for a in shown["adaptations"]] == ["a1", "a2"] and shown["n_checks"] == 1
    assert "a2" in run(main, ["kb", "show", "u1", *db]).output
    lineage = json.loads(run(main, ["kb", "lineage", "u1", "--json", *db]).output)
    assert lineage["bundles"][0]["run"]["id"] == kb_run_id(bundle_dir)
    text = run(main, ["kb", "lineage", "champion", *db]).output
    assert bid in text and kb_run_id(bundle_dir) in text and "generated:sensor-pressure" in text
    out = run(main, ["kb", "export-units", "--out", str(tmp_path / "fleet.csv"), "--bundle", "champion", *db])
    assert out.exit_code == 0 and (tmp_path / "fleet.csv").read_text().count("\n") == 10, out.output
    bad = run(main, ["kb", "show", "nobody", *db])
    assert bad.exit_code == 1 and "unit 'nobody' is not in the knowledge base" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def kb_run_id(bundle_dir: Path) -> str:
    return hashlib.sha256((bundle_dir.parent / "run" / "config.json").read_bytes()).hexdigest()


def test_knowledge_never_imports_torch_sdk_or_export(tmp_path):
    done = run_without(f"""
        from metaedge.knowledge import KnowledgeBase
        kb = KnowledgeBase.init({f"sqlite:///{tmp_path / 'kb.db'}"!r})
        print(kb.units())
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

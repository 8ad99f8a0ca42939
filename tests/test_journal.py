"""The device journal: both storage formats, crash safety (kill -9), adapt/check journaling and the C formatter."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from metaedge.runtime.journal import (
    MAX_RECORD_BYTES,
    append,
    as_rows,
    host_id,
    read_journal,
)
from metaedge.runtime.journal_records import (
    AdaptationRecord,
    BundleRef,
    CheckRecord,
    DeviceInfo,
    JournalError,
    parse_record,
)

DEVICE = DeviceInfo("cpu-x86_64", "0123456789abcdef")
BUNDLE = BundleRef("ab" * 32, "feedbeef00112233")


def adaptation(i: int, rows: int = 3) -> AdaptationRecord:
    """A deterministic adaptation record numbered ``i`` (its id and values follow from ``i``)."""
    x = tuple((float(i), 0.5 * r) for r in range(rows))
    y = tuple((float(i) * 0.25 + r,) for r in range(rows))
    return AdaptationRecord(f"{i:032x}", f"unit-{i % 7}", DEVICE, BUNDLE, "2026-12-01T09:00:00.000Z", x, y,
                            steps_run=5, steps_kept=4 + i % 2, loss_before=1.5 + i, loss_after=0.25,
                            state_sha256="cd" * 32)


def check(i: int) -> CheckRecord:
    return CheckRecord(f"c{i:031x}", "unit-1", DEVICE, BUNDLE, "2026-12-02T09:00:00.000Z", ((1.0, 2.0), (3.0, 4.0)),
                       ((10.0,), (11.0,)), ((10.5,), (10.75,)), state_sha256="cd" * 32)


@pytest.fixture(params=["journal.db", "journal.jsonl"])
def journal_path(request, tmp_path) -> Path:
    return tmp_path / request.param


# --- storage ---------------------------------------------------------------------------------------------------

def test_round_trip_both_formats(journal_path):
    records = [adaptation(0), check(0), adaptation(1)]
    for r in records:
        append(journal_path, r)
    assert list(read_journal(journal_path)) == records
    magic = journal_path.read_bytes()[:16]
    assert (magic == b"SQLite format 3\x00") == (journal_path.suffix == ".db")


def test_sqlite_layout_wal_and_append_only(tmp_path):
    path = tmp_path / "j.db"
    append(path, adaptation(0))
    append(path, adaptation(0))  # same record_id: idempotent
    append(path, adaptation(1))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    cols = [(r[1], r[2], r[3], r[5]) for r in db.execute("PRAGMA table_info(records)")]
    assert cols == [("seq", "INTEGER", 0, 1), ("record_id", "TEXT", 1, 0), ("json", "TEXT", 1, 0)]
    assert db.execute("SELECT seq, record_id FROM records").fetchall() == [(1, f"{0:032x}"), (2, f"{1:032x}")]
    for sql in ("UPDATE records SET json = '{}'", "DELETE FROM records"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()
    assert [r.record_id for r in read_journal(path)] == [f"{0:032x}", f"{1:032x}"]


def test_sqlite_row_that_disagrees_or_is_malformed(tmp_path):
    path = tmp_path / "j.db"
    append(path, adaptation(0))
    db = sqlite3.connect(path)
    db.execute("INSERT INTO records (record_id, json) VALUES ('x', ?)", (adaptation(1).to_json(),))
    db.commit()
    with pytest.raises(JournalError, match=r"j.db, row 2: its record_id column 'x' differs"):
        list(read_journal(path))
    other = tmp_path / "other.db"
    db2 = sqlite3.connect(other)
    db2.execute("CREATE TABLE t (a)")
    db2.commit()
    db2.close()
    with pytest.raises(JournalError, match="without a records table"):
        list(read_journal(other))
    with pytest.raises(JournalError, match="not an SQLite journal"):
        (tmp_path / "text.db").write_text("hello\n")
        append(tmp_path / "text.db", adaptation(0))


def test_jsonl_torn_last_line_skipped_then_cut_on_append(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    append(path, adaptation(0))
    torn = adaptation(1).to_json().encode()[:57]  # what a power cut mid-write leaves: no newline
    with open(path, "ab") as f:
        f.write(torn)
    reading = read_journal(path)
    assert list(reading) == [adaptation(0)] and reading.torn_lines == 1
    append(path, adaptation(2))  # cuts the fragment off first: it never fuses with this line
    assert path.read_bytes() == (adaptation(0).to_json() + "\n" + adaptation(2).to_json() + "\n").encode()
    reading = read_journal(path)
    assert list(reading) == [adaptation(0), adaptation(2)] and reading.torn_lines == 0
    assert "torn last line of 57 bytes" in caplog.text


def test_jsonl_corrupt_complete_line_names_the_line(tmp_path):
    path = tmp_path / "j.jsonl"
    append(path, adaptation(0))
    with open(path, "ab") as f:
        f.write(b'{"schema": "metaedge.journal/1", "kind": "adaptation"}\n')
    append(path, adaptation(1))
    with pytest.raises(JournalError, match=r"j.jsonl, line 2: field device is missing"):
        list(read_journal(path))


def test_reads_are_bounded(tmp_path):
    path = tmp_path / "j.jsonl"
    for i in range(5):
        append(path, adaptation(i))
    assert len(list(read_journal(path, max_records=5))) == 5
    with pytest.raises(JournalError, match="more than 4 records"):
        list(read_journal(path, max_records=4))
    db = tmp_path / "j.db"
    for i in range(3):
        append(db, adaptation(i))
    with pytest.raises(JournalError, match="more than 2 records"):
        list(read_journal(db, max_records=2))
    long = tmp_path / "long.jsonl"
    long.write_bytes(b"{" + b" " * MAX_RECORD_BYTES + b"}\n")
    with pytest.raises(JournalError, match="line 1 is longer than"):
        list(read_journal(long))
    with pytest.raises(JournalError, match="does not exist"):
        read_journal(tmp_path / "missing.db")


def test_host_id_is_stable_and_hides_the_machine_id(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("4f1c0e8a2b3d4e5f6a7b8c9d0e1f2a3b\n")
    a, b = host_id(tmp_path), host_id(tmp_path)
    assert a == b and len(a) == 16 and a not in "4f1c0e8a2b3d4e5f6a7b8c9d0e1f2a3b"
    (tmp_path / "etc" / "machine-id").write_text("ffffffffffffffffffffffffffffffff\n")
    assert host_id(tmp_path) != a
    assert host_id(tmp_path / "nowhere") == host_id(tmp_path / "elsewhere")  # the host name's


def test_as_rows_shortest_float32_decimals():
    rows = as_rows(np.array([[0.1, 2.5], [1e-7, -3.0]], np.float32))
    assert rows == ((0.1, 2.5), (1e-7, -3.0))
    assert np.array_equal(np.float32(rows), np.array([[0.1, 2.5], [1e-7, -3.0]], np.float32))
    assert as_rows(np.array([1.0, 2.0])) == ((1.0,), (2.0,))


# --- crash safety: kill -9 at random moments -------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_journal import adaptation
    from metaedge.runtime.journal import append
    path, first = sys.argv[1], int(sys.argv[2])
    i = first
    while True:
        append(path, adaptation(i, rows=50))
        print(i, flush=True)  # acknowledged only once append returned: the record is committed
        i += 1
""")


@pytest.mark.parametrize("name", ["kill.db", "kill.jsonl"])
def test_kill_9_loses_nothing_committed(tmp_path, name):
    """A writer appends in a loop and is SIGKILLed at 20 random moments; every acknowledged record reads back
    whole, none twice, and at most one unacknowledged (committed just before the kill) per kill."""
    path, rng = tmp_path / name, random.Random(12)
    acked: list[int] = []
    nxt = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(nxt), str(Path(__file__).parent)],
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # imports done and one append committed
        assert first, "the writer died before its first append"
        acked.append(int(first))
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked += [int(v) for v in out.split()]
        assert proc.returncode == -signal.SIGKILL
        nxt = acked[-1] + 2  # the one after the last acknowledged may be in the journal: skip its number
    records = list(read_journal(path))
    numbers = [int(r.record_id, 16) for r in records]
    assert len(numbers) == len(set(numbers))
    assert set(acked) <= set(numbers) and len(set(numbers) - set(acked)) <= 20
    assert all(r == adaptation(int(r.record_id, 16), rows=50) for r in records)
    print(f"kill -9 x20 ({name}): {len(acked)} acknowledged appends, {len(records)} records read back, "
          f"{len(set(numbers) - set(acked))} committed-but-unacknowledged, 0 lost, 0 duplicated")


def test_record_json_is_the_contract():
    line = adaptation(3).to_json()
    assert json.loads(line)["schema"] == "metaedge.journal/1"
    assert parse_record(line) == adaptation(3)


# --- Model.adapt(journal=...), Adapted.check, and the CLI -------------------------------------------------------

@pytest.fixture(scope="module")
def model(small_bundle):
    from metaedge.runtime.model import Model

    return Model.load(small_bundle, backend="native")


def _support(model, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` physical points around the bundle's normalisation (inputs and a linear target)."""
    norm = model.bundle.manifest.normalization
    rng = np.random.default_rng(seed)
    x = (np.asarray(norm.x_mean) + np.asarray(norm.x_std) * rng.standard_normal((k, len(norm.x_mean))))
    y = np.asarray(norm.y_mean) + np.asarray(norm.y_std) * (0.3 + 0.5 * rng.standard_normal((k, len(norm.y_mean))))
    return x.astype(np.float32), y.astype(np.float32)


def _standardised_mse(model, theta, x, y) -> float:
    """Reference support loss: predictions in physical units, standardised in float64 here."""
    from metaedge.runtime.model import Adapted

    norm = model.bundle.manifest.normalization
    mean, std = np.asarray(norm.y_mean, np.float64), np.asarray(norm.y_std, np.float64)
    pred = Adapted(model, theta).predict(x).astype(np.float64)
    return float(np.mean(((pred - mean) / std - (y - mean) / std) ** 2))


def test_adapt_journals_after_saving(model, tmp_path):
    import hashlib

    x, y = _support(model, 3, 0)
    state, journal = tmp_path / "u1.state", tmp_path / "j.db"
    adapted = model.adapt(x, y, steps=4, journal=journal, unit="SN-001", save=state)
    (record,) = read_journal(journal)
    assert record.unit == "SN-001" and record.device.profile == model.device and record.device.host_id == host_id()
    assert record.state_sha256 == hashlib.sha256(state.read_bytes()).hexdigest() == adapted.state_sha256
    assert record.bundle.manifest_sha256 == hashlib.sha256(
        (model.bundle.path / "manifest.json").read_bytes()).hexdigest() and record.bundle.signing_key_id is None
    np.testing.assert_array_equal(np.float32(record.support_x), x)
    np.testing.assert_array_equal(np.float32(record.support_y), y)
    assert (record.steps_run, record.steps_kept) == (4, adapted.steps_kept) and record.start_state_sha256 is None
    before = _standardised_mse(model, model.theta0, x, y)
    after = _standardised_mse(model, adapted.theta, x, y)
    assert record.loss_before == pytest.approx(before, rel=1e-5) and record.loss_after == pytest.approx(after, rel=1e-5)
    # the C library's own guard losses (me_adapt_info), float32
    info = model.runner._model._info
    assert record.loss_before == pytest.approx(info.loss_before, rel=1e-4)
    assert record.loss_after == pytest.approx(info.loss_after, rel=1e-4)
    if adapted.steps_kept:
        assert record.loss_after <= record.loss_before


def test_recalibration_names_the_start_state(model, tmp_path):
    from metaedge.runtime.journal import file_sha256
    from metaedge.runtime.model import Adapted

    x, y = _support(model, 3, 1)
    first = tmp_path / "first.state"
    model.adapt(x, y, save=first)
    old = Adapted.load(model, first)
    x2, y2 = _support(model, 2, 2)
    again = model.adapt(x2, y2, start=old, journal=tmp_path / "j.jsonl", unit="SN-002", save=tmp_path / "2.state")
    (record,) = read_journal(tmp_path / "j.jsonl")
    assert record.start_state_sha256 == file_sha256(first) != record.state_sha256
    assert record.loss_before == pytest.approx(_standardised_mse(model, old.theta, x2, y2), rel=1e-5)
    assert record.state_sha256 == again.state_sha256


def test_journal_needs_a_unit_and_a_fresh_adaptation(model, tmp_path):
    from metaedge.errors import InputError
    from metaedge.runtime.model import Adapted

    x, y = _support(model, 3, 0)
    with pytest.raises(InputError, match="needs the unit's id"):
        model.adapt(x, y, journal=tmp_path / "j.db")
    with pytest.raises(InputError, match="only an adaptation made by Model.adapt"):
        Adapted(model, model.theta0).journal(tmp_path / "j.db", "SN-1")
    assert not (tmp_path / "j.db").exists()


def test_check_records_predictions_beside_references(model, tmp_path):
    from metaedge.runtime.model import Adapted

    x, y = _support(model, 3, 0)
    model.adapt(x, y, save=tmp_path / "s.state")
    loaded = Adapted.load(model, tmp_path / "s.state")
    xc, yc = _support(model, 5, 9)
    record = loaded.check(xc, yc, journal=tmp_path / "j.db", unit="SN-003")
    assert list(read_journal(tmp_path / "j.db")) == [record]
    np.testing.assert_array_equal(np.float32(record.predicted), loaded.predict(xc))
    np.testing.assert_array_equal(np.float32(record.reference), yc)
    assert record.state_sha256 == loaded.state_sha256 and record.unit == "SN-003"


def test_cli_adapt_and_check_with_a_journal(small_bundle, model, tmp_path):
    from click.testing import CliRunner

    from metaedge.cli import main
    from metaedge.runtime.tables import write_columns

    m = model.bundle.manifest
    cols = [*m.input.names, *m.output.names]
    x, y = _support(model, 3, 4)
    write_columns(tmp_path / "s.csv", cols, np.hstack([x, y]))
    xc, yc = _support(model, 4, 5)
    write_columns(tmp_path / "c.csv", cols, np.hstack([xc, yc]))
    journal = tmp_path / "device.db"
    run = CliRunner().invoke
    common = ["--backend", "native"]
    r = run(main, ["adapt", str(small_bundle), "--support", str(tmp_path / "s.csv"), "--out", str(tmp_path / "a.st"),
                   "--journal", str(journal), "--unit", "SN-9", *common])
    assert r.exit_code == 0, r.output
    r = run(main, ["adapt", str(small_bundle), "--support", str(tmp_path / "s.csv"), "--out", str(tmp_path / "b.st"),
                   "--start", str(tmp_path / "a.st"), "--journal", str(journal), "--unit", "SN-9", *common])
    assert r.exit_code == 0, r.output
    r = run(main, ["check", str(small_bundle), "--state", str(tmp_path / "b.st"), "--reference",
                   str(tmp_path / "c.csv"), "--journal", str(journal), "--unit", "SN-9", *common])
    assert r.exit_code == 0, r.output
    first, second, checked = read_journal(journal)
    assert second.start_state_sha256 == first.state_sha256 and checked.state_sha256 == second.state_sha256
    pred = np.float64(checked.predicted)
    rmse = np.sqrt(np.mean((pred - np.float64(checked.reference)) ** 2, axis=0))
    assert f"RMSE over 4 readings: {m.output.names[0]} {rmse[0]:.6g}" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) >= 6  # header + 4 readings + RMSE
    r = run(main, ["adapt", str(small_bundle), "--support", str(tmp_path / "s.csv"), "--out", str(tmp_path / "c.st"),
                   "--journal", str(journal), *common])
    assert r.exit_code != 0 and "--journal needs --unit" in r.output

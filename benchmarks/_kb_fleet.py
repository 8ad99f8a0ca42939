"""Shared by the knowledge-base benchmarks (kb_load.py, kb_latency.py): a synthetic fleet's journal records, the
databases to run on (SQLite file; a throwaway PostgreSQL server from tests/pg_server.py) and result writing.
torch-free, like the knowledge base."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from metaedge.runtime.journal import append
from metaedge.runtime.journal_records import AdaptationRecord, BundleRef, CheckRecord, DeviceInfo, Record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))
import pg_server  # noqa: E402

BUNDLE = BundleRef("5" * 64, "0123456789abcdef")


def records(n: int, units: int, seed: int = 0, prefix: str = "r") -> list[Record]:
    """``n`` records over ``units`` units (9 adaptations with 3 support points to 1 check of 4 readings), ids
    ``<prefix><index>`` so a run can tell exactly which ones were stored, times increasing with the index."""
    rng = np.random.default_rng(seed)
    out: list[Record] = []
    for i in range(n):
        unit = f"unit-{i % units:05d}"
        device = DeviceInfo("cpu-x86_64", f"line-{i % 8}")
        time = f"2026-{1 + (i // 100_000) % 12:02d}-01T00:00:00.{i % 1_000_000:06d}+00:00"
        x = np.round(rng.uniform(0, 100, (4, 2)), 6)
        y = np.round(x[:, :1] * 0.9 + rng.normal(0, 0.1, (4, 1)), 6)
        rid = f"{prefix}{i:08d}"
        if i % 10 == 9:
            out.append(CheckRecord(rid, unit, device, BUNDLE, time, _rows(x), _rows(y), _rows(y + 0.05), "ab" * 32))
        else:
            out.append(AdaptationRecord(rid, unit, device, BUNDLE, time, _rows(x[:3]), _rows(y[:3]), 5, 4,
                                        1.25, 0.125, "ab" * 32))
    return out


def _rows(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in r) for r in a)


def write_journal(path: Path, recs: list[Record]) -> Path:
    """A journal of ``recs``: JSON Lines (the documented one-record-per-line format firmware emits, written in one
    go) for a ``.jsonl`` path, else an SQLite journal through the runtime's ``append``."""
    if path.suffix == ".jsonl":
        path.write_text("".join(r.to_json() + "\n" for r in recs))
    else:
        for r in recs:
            append(path, r)
    return path


@contextmanager
def databases(folder: Path, which: list[str]) -> Iterator[Iterator[tuple[str, str]]]:
    """Yield an iterator of (dialect, fresh database URL): an SQLite file under ``folder``; a database on a
    throwaway PostgreSQL server (skipped with the reason printed where none can be started)."""
    server = None
    if "postgresql" in which:
        reason = pg_server.unavailable()
        if reason is None:
            server = pg_server.PostgresServer.start()
        else:
            print(f"PostgreSQL skipped: {reason}")

    def urls() -> Iterator[tuple[str, str]]:
        if "sqlite" in which:
            yield "sqlite", f"sqlite:///{folder / 'kb.db'}"
        if server is not None:
            yield "postgresql", server.create_database("bench")

    try:
        yield urls()
    finally:
        if server is not None:
            server.stop()


def write_result(name: str, data: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json`` with what it was measured on."""
    import sqlalchemy

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    machine = {"python": platform.python_version(), "sqlalchemy": sqlalchemy.__version__,
               "cpu": platform.processor() or platform.machine()}
    path.write_text(json.dumps({**data, "machine": machine}, indent=2) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)

"""Scenario 4 of issue 12: `kb lineage` and `kb show` latency with 100,000 adaptations stored.

The knowledge base holds 100,000 adaptations (and one check per 9 adaptations) of 10,000 units, ingested from
JSON Lines journals; their bundle and its run are registered (rows written as `kb register` writes them, with one
data hash), so a unit's lineage walks unit -> adaptations -> bundle -> run -> data. Timed, median of the repeats:

- the query alone (``KnowledgeBase.unit`` / ``.lineage`` on an open knowledge base), for a unit and the bundle;
- the whole command in-process (``metaedge kb show UNIT`` / ``kb lineage UNIT`` through click: connect, schema
  check, query, text table);
- the command as a new process (``python -m metaedge.cli kb ...``: interpreter start and imports included).

Goal: under 100 ms on SQLite. ``--dialect postgresql`` measures PostgreSQL too.

    python benchmarks/kb_latency.py [--adaptations 100000] [--repeats 30] [--dialect sqlite --dialect postgresql]

Prints a table and writes benchmarks/results/kb_latency.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _kb_fleet import BUNDLE, databases, records, table, write_journal, write_result
from click.testing import CliRunner

from metaedge.cli import main as cli
from metaedge.knowledge import KnowledgeBase
from metaedge.knowledge.ingest import now
from metaedge.knowledge.schema import aliases, bundles, run_data, runs


def fill(url: str, folder: Path, n_adaptations: int, units: int) -> float:
    """Ingest the fleet and register its bundle; returns the ingest wall seconds."""
    n = n_adaptations * 10 // 9 + 1  # every 10th record is a check
    recs = records(n, units=units, seed=4, prefix="l")
    per_file = 20_000
    files = [write_journal(folder / f"l{i:02d}.jsonl", recs[i:i + per_file]) for i in range(0, n, per_file)]
    kb = KnowledgeBase.init(url)
    t0 = time.perf_counter()
    kb.ingest(*files)
    wall = time.perf_counter() - t0
    run_id = "7" * 64
    with kb._writer.begin() as conn:
        stamp = now()
        conn.execute(runs.insert().values(id=run_id, path="/runs/lot-a", algo="metasgd", family="sensor-pressure",
                                          config={"train": {"family": "sensor-pressure"}}, registered=stamp))
        conn.execute(run_data.insert().values(run_id=run_id, name="generated:sensor-pressure", sha256="8" * 64))
        conn.execute(bundles.insert().values(
            id=BUNDLE.manifest_sha256, path="/bundles/lot-a", run_id=run_id, run_path="/runs/lot-a", algo="metasgd",
            task_kind="regression", family={"name": "sensor-pressure"}, input_names=["bridge_output", "temperature"],
            output_names=["pressure"], input_units=["mV/V", "degC"], output_units=["kPa"],
            signing_key_id=BUNDLE.signing_key_id, created=stamp, registered=stamp))
        conn.execute(aliases.insert().values(name="champion", bundle_id=BUNDLE.manifest_sha256, set=stamp))
    kb.close()
    return wall


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: first-use caches (statement compilation, the migration head)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def measure(url: str, repeats: int, unit: str) -> dict[str, float]:
    kb = KnowledgeBase(url)
    runner = CliRunner()

    def command(*args: str):
        def go():
            r = runner.invoke(cli, ["kb", *args, "--db", url])
            assert r.exit_code == 0, r.output
        return go

    def process(*args: str):
        def go():
            subprocess.run([sys.executable, "-m", "metaedge.cli", "kb", *args, "--db", url], check=True,
                           capture_output=True)
        return go

    out = {
        "show_query_ms": median_ms(lambda: kb.unit(unit), repeats),
        "lineage_query_ms": median_ms(lambda: kb.lineage(unit), repeats),
        "bundle_lineage_query_ms": median_ms(lambda: kb.lineage("champion"), repeats),
        "units_query_ms": median_ms(kb.units, 3),
        "show_command_ms": median_ms(command("show", unit), repeats),
        "lineage_command_ms": median_ms(command("lineage", unit), repeats),
        "show_process_ms": median_ms(process("show", unit), 5),
        "lineage_process_ms": median_ms(process("lineage", unit), 5),
    }
    detail = kb.unit(unit)
    out["unit_records"] = len(detail.adaptations) + len(detail.checks)
    kb.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adaptations", type=int, default=100_000)
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--dialect", action="append", choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="kb-latency-") as tmp, \
            databases(Path(tmp), args.dialect or ["sqlite"]) as urls:
        for dialect, url in urls:
            folder = Path(tmp) / dialect
            folder.mkdir()
            ingest_s = fill(url, folder, args.adaptations, args.units)
            with KnowledgeBase(url) as kb:
                stored = kb.lineage("champion").bundles[0].n_adaptations
            unit = f"unit-{args.units // 2 + 42:05d}"
            results[dialect] = {"adaptations": stored, "units": args.units, "ingest_s": round(ingest_s, 1),
                                "repeats": args.repeats, "unit": unit, **measure(url, args.repeats, unit)}
            print(dialect, results[dialect], flush=True)
    keys = [k for k in next(iter(results.values())) if k.endswith("_ms")]
    print(table(["dialect", "adaptations", *keys], [[d, r["adaptations"], *(r[k] for k in keys)]
                                                    for d, r in results.items()]))
    print("written to", write_result("kb_latency", {**results, "goal_ms": 100}))


if __name__ == "__main__":
    main()

"""Scenario 2, real sensors arriving one by one: PurpleAir PM2.5 units, a model update after every 3 arrivals.

The 12 colocated sensors of ``../shared/data/purpleair_colocation`` arrive in order of their first day.

1. The first bundle is meta-trained on the first 3 units (``table`` family over their days; ridge head on 32-32
   tanh features with a linear skip, 10 shots, as ``benchmarks/purpleair.py``) and exported.
2. Each arriving unit is calibrated on the device runtime from its first 10 days
   (``Model.adapt(..., journal=, unit=)``); its later colocated days are in-service checks against the reference
   monitor, journaled in batches of 30 days (``Adapted.check``).
3. After every 3 arrivals the knowledge base ingests the new journals and ``kb update`` trains a candidate from
   the champion on the mixture of the first bundle's units and every arrived unit, judges and maybe promotes it.
4. After each update (and before the first), the champion is scored on the units that have not arrived yet:
   ``--draws`` random sets of 10 days per unit, RMSE on the unit's other days (ug/m3), beside per-unit linear
   regression on the same 10 days (``conc ~ a + b*PM``) and the EPA formula (Barkjohn et al. 2021). Mean ± 95% CI
   over (unit, draw) tasks; with 9, 6 and 3 units left the CIs are wide: few real units is the point.

Writes ``benchmarks/results/purpleair_arrivals.json``.

    python benchmarks/purpleair_arrivals.py [--iterations 2000] [--update-iterations 1000] [--draws 20]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from common import train_or_resume, write_result
from purpleair import linear_fit

from metaedge.export.bundle import export_bundle
from metaedge.knowledge import KnowledgeBase
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import mean_ci
from metaedge.sdk.tasks import find_data_dir
from metaedge.sdk.tasks.table import PURPLEAIR_FILE, PurpleAir
from metaedge.update import UpdateSettings, update_from_kb

ROOT = Path(__file__).resolve().parent.parent
SHOTS, CHECK_BATCH, FIRST = 10, 30, 3
COLUMNS = ("sensor_index", *PurpleAir.X_COLUMNS, "conc")


def arrivals(source: Path) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
    """Unit ids in order of their first day, and each unit's rows in date order."""
    with open(source, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    by_unit: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_unit.setdefault(r["sensor_index"], []).append(r)
    for days in by_unit.values():
        days.sort(key=lambda r: r["DAILY"])
    order = sorted(by_unit, key=lambda u: (by_unit[u][0]["DAILY"], u))
    return order, by_unit


def arrays(days: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, 4)`` and reference ``(n, 1)`` of a unit's days."""
    x = np.array([[float(d[c]) for c in PurpleAir.X_COLUMNS] for d in days], np.float32)
    return x, np.array([[float(d["conc"])] for d in days], np.float32)


def score(bundle: Path, units: list[str], by_unit: dict, draws: int, seed: int) -> dict[str, np.ndarray]:
    """Per (unit, draw) RMSE of the bundle, per-unit linear regression and the EPA formula on the same days."""
    model = Model.load(bundle)
    out: dict[str, list[float]] = {"metaedge": [], "per-unit linear (PM)": [], "EPA formula": []}
    for u in units:
        x, y = arrays(by_unit[u])
        rng = np.random.default_rng([seed, int(u)])
        for _ in range(draws):
            pick = rng.permutation(len(y))
            s, q = pick[:SHOTS], pick[SHOTS:]
            preds = {"metaedge": model.adapt(x[s], y[s]).predict(x[q]),
                     "per-unit linear (PM)": linear_fit(x[s], y[s], x[q], [0]),
                     "EPA formula": (0.524 * x[q, 0] - 0.0862 * x[q, 1] + 5.75)[:, None]}
            for m, p in preds.items():
                out[m].append(float(np.sqrt(np.mean((p.astype(np.float64) - y[q]) ** 2))))
    return {m: np.array(v) for m, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "purpleair-arrivals")
    parser.add_argument("--iterations", type=int, default=2000, help="meta-iterations of the first bundle")
    parser.add_argument("--update-iterations", type=int, default=1000)
    parser.add_argument("--weight", type=float, default=0.5, help="share of arrived units among training tasks")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    work: Path = args.work.resolve()
    source = find_data_dir("purpleair_colocation") / PURPLEAIR_FILE
    order, by_unit = arrivals(source)
    work.mkdir(parents=True, exist_ok=True)
    first = work / "first3.csv"
    with open(first, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for u in order[:FIRST]:
            w.writerows([[d[c] for c in COLUMNS] for d in by_unit[u]])
    cfg = TrainConfig(family="table", family_options={
        "path": str(first), "group": "sensor_index", "x_columns": list(PurpleAir.X_COLUMNS), "y_column": "conc",
        "test_fraction": 0.0, "input_units": ["ug/m3", "%", "degC", "degC"], "output_units": ["ug/m3"]},
        algo="ridge", shots=SHOTS, queries=10, inner_steps=1, inner_lr=1.0, meta_lr=1e-3, meta_batch=16,
        lr_schedule="cosine", iterations=args.iterations, hidden=[32, 32], activation="tanh", skip=True,
        log_every=500, checkpoint_every=args.iterations)
    run, _ = train_or_resume(cfg, work / "first-run", progress=False)
    bundle = work / "first.bundle"
    if not bundle.is_dir():
        export_bundle(run, bundle)
    for stale in (work / "kb.db", *work.glob("kb.db-*"), *work.glob("update-*"), *work.glob("journal-*")):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    kb = KnowledgeBase.init(f"sqlite:///{work / 'kb.db'}")
    kb.register_bundle(bundle, alias="champion")
    settings = UpdateSettings(iterations=args.update_iterations, weight=args.weight, test_fraction=0.25,
                              eval_tasks=200)

    stages = []

    def stage(label: str, arrived: int, outcome=None) -> None:
        left = order[FIRST + arrived:]
        entry = {"after": label, "arrived": arrived, "units_left": left, "champion": kb.bundle("champion").id}
        if outcome is not None:
            entry |= {"promoted": outcome.decision.promote, "decision": outcome.decision.figures()}
        if left:
            errs = score(Path(kb.bundle("champion").path), left, by_unit, args.draws, args.seed)
            errs["first bundle"] = score(bundle, left, by_unit, args.draws, args.seed)["metaedge"]
            entry["rmse"] = {m: dict(zip(("mean", "ci"), mean_ci(v))) for m, v in errs.items()}
            entry["paired_vs_first"] = dict(zip(("mean", "ci"), mean_ci(errs["metaedge"] - errs["first bundle"])))
            entry["paired_vs_linear"] = dict(zip(("mean", "ci"), mean_ci(errs["metaedge"]
                                                                         - errs["per-unit linear (PM)"])))
        stages.append(entry)

    stage("first bundle (3 units)", 0)
    arriving = order[FIRST:]
    for i, unit in enumerate(arriving, start=1):
        model = Model.load(Path(kb.bundle("champion").path))
        journal = work / f"journal-{unit}.db"
        x, y = arrays(by_unit[unit])
        adapted = model.adapt(x[:SHOTS], y[:SHOTS], journal=journal, unit=unit)
        for lo in range(SHOTS, len(y), CHECK_BATCH):  # in service beside the reference monitor
            adapted.check(x[lo:lo + CHECK_BATCH], y[lo:lo + CHECK_BATCH], journal=journal, unit=unit)
        kb.ingest(journal)
        if i % 3 == 0:
            outcome = update_from_kb(kb, work / f"update-{i}", settings=settings)
            stage(f"update after {i} arrivals", i, outcome)

    print(f"\nPurpleAir arrivals: champion vs baselines on the units not yet arrived, {args.draws} draws of "
          f"{SHOTS} days per unit; RMSE [ug/m3], mean ± 95% CI")
    print(f"{'after':28s} {'left':>4s} {'promoted':>8s} {'champion':>16s} {'first bundle':>16s} {'linear (PM)':>16s} "
          f"{'EPA':>16s} {'champion - linear':>18s} {'champion - first':>18s}")
    for s in stages:
        if "rmse" not in s:
            print(f"{s['after']:28s} {0:4d} {str(s.get('promoted')):>8s} (no units left)")
            continue
        r = s["rmse"]
        cells = " ".join(f"{r[m]['mean']:8.3f} ± {r[m]['ci']:.3f}"
                         for m in ("metaedge", "first bundle", "per-unit linear (PM)", "EPA formula"))
        p, f = s["paired_vs_linear"], s["paired_vs_first"]
        print(f"{s['after']:28s} {len(s['units_left']):4d} {str(s.get('promoted', '-')):>8s} {cells} "
              f"{p['mean']:+8.3f} ± {p['ci']:.3f} {f['mean']:+9.3f} ± {f['ci']:.3f}")
    wall = time.perf_counter() - t0
    path = write_result("purpleair_arrivals", {"order": order, "settings": {**vars(args), "work": str(args.work),
                                               "update": asdict(settings)}, "stages": stages, "wall_seconds": wall})
    print(f"wrote {path} in {wall:.0f} s")


if __name__ == "__main__":
    main()

"""Scenario 1, a new production lot: does feeding the fleet's calibrations back make the next units better?

1. A bundle is meta-trained on lot A of the piezoresistive pressure sensor (``configs/sensor-pressure.json``:
   ridge head on meta-learned 32-32 tanh features with a linear skip, as ``scripts/quickstart.sh``) and exported.
2. A line makes 300 lot-B units (``sensor-pressure`` with ``lot=B``: a second supplier's die). Each unit is
   calibrated on the device runtime from 3 reference points (``Model.adapt(..., journal=, unit=, save=)``); 1 in 10
   is also audited at 20 reference points (``Adapted.check(..., journal=)``). Journals are SQLite files.
3. For each number of fed-back units N (0, 30, 100, 300): a fresh knowledge base gets the champion and the journals
   of the first N units, and ``kb update`` (:func:`metaedge.update.update_from_kb`) trains, judges and maybe
   promotes a candidate. Only audited units have more points than the shot count, so N units give N/10 fleet tasks.
4. Every bundle adapts on the device runtime to 500 new lot-B units and 500 new lot-A units (the same units for
   every bundle) from 3 random reference points; RMSE over 100 points spread over each unit's range (kPa).
   Relative change of the mean RMSE against the original bundle, with a paired bootstrap 95% CI over units.
5. For reference, a bundle meta-trained from scratch on lot B itself with the champion's config (the simulator
   knows lot B; a line only has its records): how far the update is from complete knowledge of the new lot.

Goal (issue 12): with 300 units fed back, lot B error >= 30% lower (the CI's upper end at most -30%), lot A at
most 5% higher. Writes ``benchmarks/results/fleet_update.json`` and the plot ``docs/fleet_update.png``.

    python benchmarks/fleet_update.py [--fed-back 0,30,100,300] [--iterations 3000] [--weight 0.1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from common import train_or_resume, write_result

from metaedge.export.bundle import export_bundle
from metaedge.knowledge import KnowledgeBase
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.tasks import make_family
from metaedge.update import UpdateSettings, update_from_kb

ROOT = Path(__file__).resolve().parent.parent
SHOTS, AUDIT_POINTS = 3, 20


def run_line(bundle: Path, work: Path, n_units: int, cuts: list[int], audit_every: int, seed: int) -> list[Path]:
    """Calibrate ``n_units`` lot-B units on the device runtime, journaling each; one journal per segment between
    ``cuts`` (so a knowledge base can ingest the first N units). Returns the journals, in order."""
    model, fam, rng = Model.load(bundle), make_family("sensor-pressure", lot="B"), np.random.default_rng(seed)
    states = work / "states"
    states.mkdir(parents=True, exist_ok=True)
    journals, bounds = [], sorted({0, *cuts, n_units})
    for lo, hi in zip(bounds, bounds[1:]):
        journal = work / f"line-{lo:04d}-{hi:04d}.db"
        journal.unlink(missing_ok=True)
        for i in range(lo, hi):
            task = fam.sample_task(rng, SHOTS, AUDIT_POINTS)
            unit = f"B{i:05d}"
            adapted = model.adapt(task.x_support, task.y_support, journal=journal, unit=unit,
                                  save=states / f"{unit}.state")
            if i % audit_every == 0:  # the audit station: 20 reference points beside the model's readings
                adapted.check(task.x_query, task.y_query, journal=journal, unit=unit)
        journals.append(journal)
    return journals


def unit_errors(bundle: Path, lot: str, n_units: int, seed: int) -> np.ndarray:
    """3-point calibration RMSE ``(n_units,)`` of ``bundle`` on new units of ``lot`` (same units for a seed)."""
    model, fam, rng = Model.load(bundle), make_family("sensor-pressure", lot=lot), np.random.default_rng(seed)
    out = np.empty(n_units)
    for i in range(n_units):
        t = fam.sample_task(rng, SHOTS, 100)
        pred = model.adapt(t.x_support, t.y_support).predict(t.x_query)
        out[i] = np.sqrt(np.mean((pred.astype(np.float64) - t.y_query.astype(np.float64)) ** 2))
    return out


def relative_change(new: np.ndarray, old: np.ndarray, resamples: int = 4000, seed: int = 0) -> dict[str, float]:
    """``mean(new) / mean(old) - 1`` with a paired bootstrap 95% CI over units (percentile)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(new), size=(resamples, len(new)))
    boot = new[idx].mean(1) / old[idx].mean(1) - 1
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"change": float(new.mean() / old.mean() - 1), "ci_low": float(lo), "ci_high": float(hi)}


def summary(errors: np.ndarray) -> dict[str, float]:
    return {"rmse": float(errors.mean()), "rmse_ci": float(1.96 * errors.std(ddof=1) / np.sqrt(errors.size))}


def plot(rows: list[dict], out: Path, reference: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["fed_back"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for lot, style in (("B", "o-"), ("A", "s--")):
        y = [r[f"lot_{lot}"]["rmse"] for r in rows]
        e = [r[f"lot_{lot}"]["rmse_ci"] for r in rows]
        line = ax.errorbar(n, y, yerr=e, fmt=style, capsize=3, label=f"new lot {lot} units")
        ax.axhline(reference[f"lot_{lot}"]["rmse"], color=line[0].get_color(), lw=0.8, ls=":",
                   label=f"lot {lot}, bundle trained on lot B only")
    ax.set_xlabel("lot B units fed back (1 in 10 audited at 20 points)")
    ax.set_ylabel("3-point calibration RMSE [kPa]")
    ax.set_title("Pressure sensors: model update from the fleet's records")
    ax.set_xticks(n)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "fleet-scenario")
    parser.add_argument("--fed-back", default="0,30,100,300")
    parser.add_argument("--line-units", type=int, default=300)
    parser.add_argument("--audit-every", type=int, default=10)
    parser.add_argument("--new-units", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=3000, help="meta-iterations of each update")
    parser.add_argument("--weight", type=float, default=0.1, help="share of fleet units among training tasks")
    parser.add_argument("--meta-lr", type=float, default=None, help="[a third of the champion's]")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "fleet_update.png")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    fed_back = [int(v) for v in args.fed_back.split(",")]
    work: Path = args.work.resolve()
    t0 = time.perf_counter()

    config = TrainConfig.from_dict(json.loads((ROOT / "configs" / "sensor-pressure.json").read_text()))
    champion_run, train_wall = train_or_resume(config, work / "champion", progress=False)
    champion = work / "champion.bundle"
    if not champion.is_dir():
        export_bundle(champion_run, champion)
    journals = run_line(champion, work, args.line_units, [n for n in fed_back if 0 < n < args.line_units],
                        args.audit_every, args.seed)
    ends = [int(j.stem.split("-")[2]) for j in journals]
    settings = UpdateSettings(iterations=args.iterations, weight=args.weight, meta_lr=args.meta_lr)

    eval_seed_b, eval_seed_a = args.seed + 1, args.seed + 2  # new units, never on the line
    base_b = unit_errors(champion, "B", args.new_units, eval_seed_b)
    base_a = unit_errors(champion, "A", args.new_units, eval_seed_a)
    rows = [{"fed_back": 0, "bundle": "original", "promoted": None, "lot_B": summary(base_b),
             "lot_A": summary(base_a), "lot_B_change": None, "lot_A_change": None}]
    for n in (v for v in fed_back if v > 0):
        for stale in (work / f"kb-{n}.db", work / f"update-{n}"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        kb = KnowledgeBase.init(f"sqlite:///{work / f'kb-{n}.db'}")
        kb.register_bundle(champion, alias="champion")
        kb.ingest(*[j for j, end in zip(journals, ends) if end <= n])
        t1 = time.perf_counter()
        outcome = update_from_kb(kb, work / f"update-{n}", settings=settings)
        update_wall = time.perf_counter() - t1
        b = unit_errors(outcome.candidate_bundle, "B", args.new_units, eval_seed_b)
        a = unit_errors(outcome.candidate_bundle, "A", args.new_units, eval_seed_a)
        rows.append({"fed_back": n, "bundle": outcome.candidate_id, "promoted": outcome.decision.promote,
                     "fleet_units": outcome.fleet_units, "decision": outcome.decision.figures(),
                     "update_wall_seconds": update_wall, "lot_B": summary(b), "lot_A": summary(a),
                     "lot_B_change": relative_change(b, base_b), "lot_A_change": relative_change(a, base_a)})
        kb.close()
    oracle_run, _ = train_or_resume(TrainConfig.from_dict({**config.to_dict(), "family_options": {"lot": "B"}}),
                                    work / "oracle-lot-B", progress=False)
    oracle = work / "oracle-lot-B.bundle"
    if not oracle.is_dir():
        export_bundle(oracle_run, oracle)
    oracle_b = unit_errors(oracle, "B", args.new_units, eval_seed_b)
    oracle_a = unit_errors(oracle, "A", args.new_units, eval_seed_a)
    reference = {"lot_B": summary(oracle_b), "lot_A": summary(oracle_a),
                 "lot_B_change": relative_change(oracle_b, base_b), "lot_A_change": relative_change(oracle_a, base_a)}
    plot(rows, args.plot, reference)

    print(f"\n3-point RMSE [kPa] on {args.new_units} new units per lot, mean ± 95% CI; change vs the original "
          "bundle with a paired bootstrap 95% CI")
    print(f"{'fed back':>8s} {'fleet units':>11s} {'promoted':>8s} {'lot B':>16s} {'lot B change':>26s} "
          f"{'lot A':>16s} {'lot A change':>26s}")
    def change(c):
        return "-" if c is None else f"{c['change']:+.1%} [{c['ci_low']:+.1%}, {c['ci_high']:+.1%}]"

    for r in rows:
        print(f"{r['fed_back']:8d} {r.get('fleet_units', 0):11d} {str(r['promoted']):>8s} "
              f"{r['lot_B']['rmse']:8.3f} ± {r['lot_B']['rmse_ci']:.3f} {change(r['lot_B_change']):>26s} "
              f"{r['lot_A']['rmse']:8.3f} ± {r['lot_A']['rmse_ci']:.3f} {change(r['lot_A_change']):>26s}")
    print(f"{'lot B only':>8s} {'(ref.)':>11s} {'':>8s} {reference['lot_B']['rmse']:8.3f} ± "
          f"{reference['lot_B']['rmse_ci']:.3f} {change(reference['lot_B_change']):>26s} "
          f"{reference['lot_A']['rmse']:8.3f} ± {reference['lot_A']['rmse_ci']:.3f} "
          f"{change(reference['lot_A_change']):>26s}")
    last = rows[-1]
    goal = (last["lot_B_change"] is not None and last["lot_B_change"]["ci_high"] <= -0.30
            and last["lot_A_change"]["change"] <= 0.05)
    print(f"goal (lot B >= 30% lower with 95% CI, lot A at most 5% higher, {last['fed_back']} fed back): "
          f"{'met' if goal else 'NOT met'}")
    wall = time.perf_counter() - t0
    path = write_result("fleet_update", {"settings": {**vars(args), "work": str(args.work), "plot": str(args.plot),
                                                      "update": asdict(settings)},
                                         "champion_train_wall_seconds": train_wall, "wall_seconds": wall,
                                         "rows": rows, "lot_B_only_reference": reference, "goal_met": goal})
    print(f"wrote {path} and {args.plot} in {wall:.0f} s")


if __name__ == "__main__":
    main()

"""`metaedge calibrate --target` over simulated units of sensor-pressure (issue 13, must-show 3).

The ridge bundle of ``benchmarks/intervals.py`` (same config and work folder: trained and exported once, reused),
loaded with the torch-free runtime. Each unit is a fresh draw of the family's simulator (seed 2468, neither
training's streams, the export's interval fit (``val``, seed + 505) nor the evaluator's 1234). Its candidates are
the settings a technician can apply: a grid of 9 pressures (0 .. 100 kPa) x 5 chamber temperatures (-20 .. 85 degC),
whose inputs are the unit's own noisy bridge outputs and measured temperatures there, and whose reference reading
is the applied pressure. The guided loop (:func:`metaedge.calibrate.run_session`, the code behind the command)
runs with each target and ``--max-points 8``; after it stops, the unit's *true* RMSE over its range is measured on
200 points drawn uniformly over pressure and temperature (as the family's query sets are).

Reported per target: the mean number of points used, the share of units that reached the target, and the share
whose true RMSE then exceeds the target (goal at most 5%), over all units and over those that reached it.

    python benchmarks/calibrate_target.py [--iterations N] [--units 500] [--targets 0.5,0.75,1,1.5,2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import train_or_resume, write_result
from intervals import ridge_config

from metaedge.calibrate import run_session
from metaedge.export.bundle import export_bundle
from metaedge.runtime.model import Model
from metaedge.sdk.tasks import make_family

PRESSURES = np.linspace(0.0, 100.0, 9)
TEMPERATURES = np.linspace(-20.0, 85.0, 5)


def unit_grid(fam, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One simulated unit: candidates ``(45, 2)`` and their reference pressures ``(45, 1)``, and 200 range points
    ``(200, 2)`` with their true pressures ``(200, 1)`` (inputs: the unit's noisy readings, as on a bench)."""
    task = fam.sample_task(rng, 0, 200, split="test")  # the unit and its range points
    p, t = (a.ravel() for a in np.meshgrid(PRESSURES, TEMPERATURES))
    aux = t[:, None]
    raw = fam.measure(task.info, fam.raw_reading(task.info, p, aux), rng)
    temp = aux[:, 0] + fam.aux_noise * rng.standard_normal(len(aux))
    x = np.column_stack([raw, temp]).astype(np.float32)
    return x, p[:, None].astype(np.float32), task.x_query, task.y_query.reshape(-1, 1)


def trace(model: Model, fam, units: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit and number of points 1..max_points: the session's max 95% half-width over the candidates and the
    true RMSE over the range, ``(units, max_points)`` each. The guided order does not depend on the readings or
    the target (the posterior covariance depends on the inputs only), so one session to ``max_points`` per unit
    gives the stopping point of every target."""
    rng = np.random.default_rng(2468)
    half = np.zeros((units, max_points))
    rmse = np.zeros((units, max_points))
    for i in range(units):
        x, y, xq, yq = unit_grid(fam, rng)
        session = run_session(model, x, lambda index, point, y=y: y[index], None, max_points, planned=False)
        taken = [s.index for s in session.steps]
        for n, step in enumerate(session.steps):
            half[i, n] = step.max_half_width
            pred = model.adapt(x[taken[:n + 1]], y[taken[:n + 1]]).predict(xq)
            rmse[i, n] = float(np.sqrt(((pred - yq) ** 2).mean()))
    return half, rmse


def at_target(half: np.ndarray, rmse: np.ndarray, target: float) -> dict:
    """Where sessions with ``target`` stop (the first point whose max half-width is below it, else the last)."""
    below = half < target
    reached = below.any(1)
    stop = np.where(reached, below.argmax(1), half.shape[1] - 1)
    final = rmse[np.arange(len(stop)), stop]
    return {"target": target, "mean_points": float((stop + 1).mean()), "reached": float(reached.mean()),
            "rmse_above_target": float((final > target).mean()),
            "rmse_above_target_when_reached": float((final[reached] > target).mean()) if reached.any() else None,
            "mean_final_rmse": float(final.mean()), "points_histogram": np.bincount(stop + 1, minlength=
                                                                                   half.shape[1] + 1)[1:].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=None, help="default: the config's own count")
    ap.add_argument("--units", type=int, default=500)
    ap.add_argument("--max-points", type=int, default=8)
    ap.add_argument("--targets", default="0.5,0.75,1,1.5,2")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-intervals"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = ridge_config("pressure", args.iterations)
    run, train_s = train_or_resume(cfg, args.work / f"pressure-ridge-{cfg.iterations}", progress=False)
    bundle = args.work / f"pressure-ridge-{cfg.iterations}.meb"
    if not bundle.exists():
        export_bundle(run, bundle, check=False)
    model = Model.load(bundle, backend="onnxruntime")
    half, rmse = trace(model, make_family(cfg.family), args.units, args.max_points)
    rows = [at_target(half, rmse, float(t)) for t in args.targets.split(",")]
    for r in rows:
        when = r["rmse_above_target_when_reached"]
        print(f"target {r['target']:g} kPa: mean points {r['mean_points']:.2f}, reached {r['reached']:.1%}, "
              f"true RMSE above target {r['rmse_above_target']:.1%} (of those reaching it "
              f"{'n/a' if when is None else f'{when:.1%}'}), mean final RMSE {r['mean_final_rmse']:.3g} kPa, "
              f"points used {r['points_histogram']}")
    path = write_result("calibrate_target", {
        "family": cfg.family, "iterations": cfg.iterations, "train_seconds": train_s, "units": args.units,
        "max_points": args.max_points, "candidates": f"{len(PRESSURES)} pressures x {len(TEMPERATURES)} temperatures",
        "max_half_width_mean": half.mean(0).tolist(), "true_rmse_mean": rmse.mean(0).tolist(), "targets": rows,
        "seconds": time.perf_counter() - t0})
    print(f"written {path}")


if __name__ == "__main__":
    main()

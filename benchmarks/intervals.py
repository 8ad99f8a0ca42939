"""Predictive intervals and guided reference points on the built-in sensor families (issue 13).

For each family it meta-trains (or resumes) a ``ridge`` run from ``configs/sensor-<name>.json`` (algo forced to
ridge, one Gauss-Newton step, skip path; ``--iterations`` overrides the config's count: short trainings are fine
for coverage, which the export calibrates on meta-validation tasks), exports it (the export fits the intervals on
2000 meta-validation tasks of the ``val`` split), then, with the torch-free runtime, on held-out units of the
``test`` split (seed 1234, never seen by training or the fit):

1. coverage of nominal 95% and 80% intervals over 500 units x 50 query points after 3 reference points, with the
   mean interval width beside the RMSE (physical units);
2. error against the number of reference points 1..8, each unit offering a pool of 40 settable points over its
   range (pool-based: the simulator knows each point's reading) and scored on 50 other points: *guided* (a
   k-point calibration planned as one design, ``Model.suggest(pool, budget=k).plan``), *guided (sequential)*
   (``Model.suggest`` picks each next point given the points so far, as a session with a target does), *random*
   (a random order of the pool), and the *best classic* fit (the best of 2-point linear / LS polynomial /
   multilinear on the same random points, picked per k in hindsight: it flatters the baseline).

    python benchmarks/intervals.py [--families pressure,ntc,loadcell] [--iterations pressure=15000] [--units 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import train_or_resume, write_result

from metaedge.export.bundle import export_bundle
from metaedge.export.uncertainty import interval_metrics
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.tasks import make_family
from metaedge.selection import selection_curve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def ridge_config(family: str, iterations: int | None) -> TrainConfig:
    """The family's shipped config as a ridge run; ``iterations`` None keeps the config's own count."""
    cfg = json.loads((CONFIGS / f"sensor-{family}.json").read_text())
    iterations = iterations or cfg["iterations"]
    cfg.update(algo="ridge", inner_steps=1, inner_lr=0.1, skip=True, iterations=iterations,
               checkpoint_every=max(iterations, 1))
    return TrainConfig(**cfg)


def iteration_counts(text: str, families: list[str]) -> dict[str, int | None]:
    """``--iterations``: empty (each config's own count), one number for all, or ``family=N`` pairs."""
    if not text:
        return dict.fromkeys(families)
    if "=" not in text:
        return dict.fromkeys(families, int(text))
    given = {k: int(v) for k, v in (pair.split("=") for pair in text.split(","))}
    return {f: given.get(f) for f in families}


def coverage(bundle: Path, fam, units: int, shots: int = 3) -> dict:
    """Coverage and mean width at 95% and 80% (the evaluator's per-task metrics, averaged over units) and the RMSE
    after ``shots`` random reference points, on ``units`` held-out units x 50 query points."""
    batch = fam.sample_batch(np.random.default_rng(1234), units, shots, 50, split="test")
    out: dict = {"units": units, "shots": shots, "queries": 50}
    for level in (0.95, 0.8):
        metrics = interval_metrics(bundle, level)(batch, shots)
        out[f"coverage_{int(level * 100)}"] = float(metrics["coverage"].mean())
        out[f"width_{int(level * 100)}"] = float(metrics["interval_width"].mean())
    model = Model.load(bundle)
    sq = []
    for i in range(units):
        pred = model.adapt(batch.x_support[i], batch.y_support[i]).predict(batch.x_query[i])
        sq.append(float(((batch.y_query[i].reshape(pred.shape) - pred) ** 2).mean()))
    out["rmse"] = float(np.sqrt(np.mean(sq)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="pressure,ntc,loadcell")
    ap.add_argument("--iterations", default="", help="N for every family, or family=N,...; default: each "
                    "config's own count")
    ap.add_argument("--units", type=int, default=500)
    ap.add_argument("--curve-units", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-intervals"))
    args = ap.parse_args()
    results = {}
    families = args.families.split(",")
    for name, iterations in iteration_counts(args.iterations, families).items():
        t0 = time.perf_counter()
        cfg = ridge_config(name, iterations)
        run, train_s = train_or_resume(cfg, args.work / f"{name}-ridge-{cfg.iterations}", progress=False)
        bundle = args.work / f"{name}-ridge-{cfg.iterations}.meb"
        if not bundle.exists():
            export_bundle(run, bundle, check=False)
        model = Model.load(bundle)
        fam = make_family(cfg.family)
        cov = coverage(bundle, fam, args.units)
        curve = selection_curve(model, fam, args.curve_units)
        results[name] = {"iterations": cfg.iterations, "train_seconds": train_s, "uncertainty":
                         {"noise_scale": model.uncertainty.noise_scale, "levels": model.uncertainty.levels,
                          "factors": model.uncertainty.factors}, "coverage": cov, "selection": curve.to_json(),
                         "seconds": time.perf_counter() - t0}
        units = fam.output_units[0]
        print(f"{name}: coverage 95% {cov['coverage_95']:.3f} (mean width {cov['width_95']:.3g} {units}), "
              f"80% {cov['coverage_80']:.3f} (width {cov['width_80']:.3g}); RMSE {cov['rmse']:.3g} {units}")
        print("  points              " + " ".join(f"{k:>7d}" for k in curve.points))
        for m, values in curve.mean.items():
            print(f"  {m:19s} " + " ".join(f"{v:7.3g}" for v in values))
    path = write_result("intervals", {"families": results})
    print(f"written {path}")


if __name__ == "__main__":
    main()

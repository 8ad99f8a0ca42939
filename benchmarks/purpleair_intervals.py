"""Predictive intervals on real sensors: PurpleAir PM2.5 held-out folds (issue 13, figure 1).

The 12 sensors of ``../shared/data/purpleair_colocation`` are split into 4 folds by unit, as in
``benchmarks/purpleair.py`` (same ridge config: 32-32 tanh + linear skip, one Gauss-Newton step). Intervals need
meta-validation tasks that neither training nor the evaluation sees, so of the 9 non-test units of a fold 2 are
held out as the ``val`` split (``val_fraction`` 1/6) and the ridge head is meta-trained on the other 7; the export
fits the noise scale and the conformal factors on 2000 tasks of those 2 val units. Each held-out unit is then
calibrated with the torch-free runtime from k of its days (``--draws`` random draws of the k days) and scored on
all its remaining days: coverage of the nominal 95% and 80% intervals (share of days inside), their mean width and
the RMSE (ug/m3), per fold and pooled over all folds' predictions.

    python benchmarks/purpleair_intervals.py [--shots 10] [--draws 50] [--iterations 2000]

Without the data folder it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import train_or_resume, write_result

from metaedge.errors import MissingError
from metaedge.export.bundle import export_bundle
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.run import Run
from metaedge.sdk.tasks.table import PurpleAir

FOLDS = 4
LEVELS = (0.95, 0.8)


def fold_config(fold: int, shots: int, iterations: int) -> TrainConfig:
    """``benchmarks/purpleair.py``'s ridge config for ``fold``, with 2 of the 9 non-test units as val units."""
    return TrainConfig(family="purpleair", family_options={"folds": FOLDS, "fold": fold, "val_fraction": 1 / 6},
                       algo="ridge", shots=shots, queries=10, inner_steps=1, inner_lr=1.0, meta_lr=1e-3,
                       meta_batch=16, lr_schedule="cosine", iterations=iterations, hidden=[32, 32],
                       activation="tanh", skip=True, log_every=max(iterations, 1), checkpoint_every=max(iterations, 1))


def score_fold(model: Model, fam: PurpleAir, fold: int, shots: int, draws: int) -> dict[str, np.ndarray]:
    """Per query day of every (held-out unit, draw) task: ``inside_95``/``inside_80`` (0/1), ``width_95``/
    ``width_80``, ``sq`` (squared error) and ``unit`` (the unit's id), each ``(days,)`` concatenated over the fold's
    tasks."""
    parts: dict[str, list[np.ndarray]] = {}
    for unit in fam.units("test"):
        rng = np.random.default_rng([fold, shots, int(unit)])
        for _ in range(draws):
            task = fam.unit_task(unit, shots, rng)
            adapted = model.adapt(task.x_support, task.y_support)
            y = task.y_query.reshape(len(task.x_query), -1).astype(np.float64)
            for level in LEVELS:
                iv = adapted.predict(task.x_query, interval=level)
                tag = int(level * 100)
                parts.setdefault(f"inside_{tag}", []).append(((y >= iv.lower) & (y <= iv.upper)).ravel())
                parts.setdefault(f"width_{tag}", []).append((iv.upper - iv.lower).ravel())
            parts.setdefault("sq", []).append(((iv.prediction - y) ** 2).ravel())
            parts.setdefault("unit", []).append(np.full(y.size, int(unit)))
    return {k: np.concatenate(v).astype(np.int64 if k == "unit" else np.float64) for k, v in parts.items()}


def summary(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Coverage (share of days inside), mean width and RMSE over the days of ``scores``."""
    out = {"days": int(len(scores["sq"]))}
    for level in LEVELS:
        tag = int(level * 100)
        out[f"coverage_{tag}"] = float(scores[f"inside_{tag}"].mean())
        out[f"width_{tag}"] = float(scores[f"width_{tag}"].mean())
    out["rmse"] = float(np.sqrt(scores["sq"].mean()))
    # per held-out unit: coverage on this fleet is marginal over units, so the spread between units is reported
    out["per_unit_coverage_95"] = {str(u): float(scores["inside_95"][scores["unit"] == u].mean())
                                   for u in np.unique(scores["unit"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", default="10")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-purpleair-intervals"))
    args = ap.parse_args()
    try:
        PurpleAir()
    except MissingError as e:
        print(f"skipped: {e}")
        return
    results = []
    for shots in (int(k) for k in args.shots.split(",")):
        pooled: dict[str, list[np.ndarray]] = {}
        for fold in range(FOLDS):
            t0 = time.perf_counter()
            cfg = fold_config(fold, shots, args.iterations)
            name = f"ridge-fold{fold}-k{shots}-{args.iterations}"
            path, train_s = train_or_resume(cfg, args.work / name, progress=False)
            run = Run.load(path)
            bundle = args.work / f"{name}.meb"
            if not bundle.exists():
                export_bundle(path, bundle, check=False)
            model = Model.load(bundle)
            fam = run.family
            scores = score_fold(model, fam, fold, shots, args.draws)
            for k, v in scores.items():
                pooled.setdefault(k, []).append(v)
            row = {"shots": shots, "fold": fold, "test_units": [str(u) for u in fam.units("test")],
                   "val_units": [str(u) for u in fam.units("val")], "train_seconds": train_s,
                   "noise_scale": model.uncertainty.noise_scale[0],
                   "factors": dict(zip(model.uncertainty.levels, model.uncertainty.factors)),
                   **summary(scores), "seconds": time.perf_counter() - t0}
            results.append(row)
            print(f"k={shots} fold {fold}: 95% {row['coverage_95']:.3f} (width {row['width_95']:.2f}), "
                  f"80% {row['coverage_80']:.3f} (width {row['width_80']:.2f}), RMSE {row['rmse']:.3f} ug/m3, "
                  f"{row['days']} days", flush=True)
        row = {"shots": shots, "fold": "pooled", **summary({k: np.concatenate(v) for k, v in pooled.items()})}
        results.append(row)
        print(f"k={shots} pooled: 95% {row['coverage_95']:.3f} (width {row['width_95']:.2f}), "
              f"80% {row['coverage_80']:.3f} (width {row['width_80']:.2f}), RMSE {row['rmse']:.3f} ug/m3")
    path = write_result("purpleair_intervals", {"folds": FOLDS, "draws": args.draws, "iterations": args.iterations,
                                                "rows": results})
    print(f"written {path}")


if __name__ == "__main__":
    main()

"""PurpleAir PM2.5 field calibration (real sensors): meta-learned vs per-unit regression vs the EPA formula.

The 12 sensors of ``../shared/data/purpleair_colocation`` are split into 4 folds by unit. For each fold a
meta-learner (default: the closed-form ridge head) is meta-trained on the other 9 units (one run per k);
each held-out unit is then calibrated
from k of its days (``--draws`` random draws of the k days), and scored on all its remaining days.

Compared on exactly the same held-out days:
- meta-learned adaptation from k days (inputs: raw A/B mean PM2.5, RH, temperature, dew point);
- per-unit linear regression on the same k days: ``conc ~ a + b*PM`` and ``conc ~ a + b*PM + c*RH``;
- the EPA nationwide correction (Barkjohn et al. 2021), which needs no local data.

RMSE in ug/m3: mean ± 95% CI over (unit, draw) tasks, and pooled over all predictions.

    python benchmarks/purpleair.py [--shots 5,10] [--draws 50] [--iterations 3000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import train_or_resume, write_result

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import mean_ci
from metaedge.sdk.run import Run

FOLDS = 4


def linear_fit(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, columns: list[int]) -> np.ndarray:
    """Least squares ``y ~ 1 + x[:, columns]`` on the support days, applied to the query days."""
    design = lambda x: np.hstack([np.ones((len(x), 1)), x[:, columns].astype(np.float64)])  # noqa: E731
    coef, *_ = np.linalg.lstsq(design(xs), ys.astype(np.float64), rcond=None)
    return design(xq) @ coef


def meta_predict(run: Run, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, steps: int) -> np.ndarray:
    """Adapt the run's meta-learned model on one unit's support days and predict its query days."""
    norm, learner = run.normalizer, run.learner
    t = lambda a: torch.as_tensor(a)[None]  # noqa: E731  one task
    fast = learner.adapt_batch(run.state, t(norm.x(xs)), t(norm.y(ys)), steps)[steps]
    return norm.y_inverse(learner.predict_batch(run.state, fast, t(norm.x(xq)))[0].numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="5,10")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--algo", default="ridge", help="meta-learner (ridge: closed-form head; metasgd: 5 SGD steps)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-purpleair"))
    args = parser.parse_args()
    shots_list = [int(k) for k in args.shots.split(",")]
    methods = [f"metaedge {args.algo}", "per-unit linear (PM)", "per-unit linear (PM, RH)", "EPA formula"]
    errors = {(m, k): [] for m in methods for k in shots_list}
    sq = {(m, k): [] for m in methods for k in shots_list}
    for fold in range(FOLDS):
        for k in shots_list:
            steps, rate = (1, 1.0) if args.algo == "ridge" else (5, 0.05)
            cfg = TrainConfig(family="purpleair", family_options={"folds": FOLDS, "fold": fold}, algo=args.algo,
                              shots=k, queries=10, inner_steps=steps, inner_lr=rate, meta_lr=1e-3, meta_batch=16,
                              lr_schedule="cosine",
                              iterations=args.iterations, hidden=[32, 32], activation="tanh", skip=True,
                              log_every=500, checkpoint_every=1000)
            path, _ = train_or_resume(cfg, args.runs / f"{args.algo}-fold{fold}-k{k}", progress=False)
            run = Run.load(path)
            fam = run.family
            epa = fam.known_formulas()["epa_barkjohn2021"]
            for unit in fam.units("test"):
                rng = np.random.default_rng([fold, k, int(unit)])
                for _ in range(args.draws):
                    task = fam.unit_task(unit, k, rng)
                    xs, ys, xq, yq = task.x_support, task.y_support, task.x_query, task.y_query
                    preds = {
                        methods[0]: meta_predict(run, xs, ys, xq, cfg.inner_steps),
                        methods[1]: linear_fit(xs, ys, xq, [0]),
                        methods[2]: linear_fit(xs, ys, xq, [0, 1]),
                        methods[3]: epa(xq),
                    }
                    for m, p in preds.items():
                        err2 = (p.astype(np.float64) - yq) ** 2
                        errors[(m, k)].append(float(np.sqrt(err2.mean())))
                        sq[(m, k)].append(err2.ravel())
            print(f"fold {fold} k={k}: test units {fam.units('test')}", flush=True)
    rows = []
    print(f"\nPurpleAir, {FOLDS}-fold by unit, {args.draws} draws per held-out unit; RMSE [ug/m3] on remaining days")
    print(f"{'method':28s} {'k':>3s} {'mean ± 95% CI':>18s} {'pooled':>8s}")
    for (m, k), errs in errors.items():
        mean, ci = mean_ci(np.array(errs))
        pooled = float(np.sqrt(np.concatenate(sq[(m, k)]).mean()))
        rows.append({"method": m, "shots": k, "rmse": mean, "rmse_ci": ci, "pooled_rmse": pooled, "tasks": len(errs)})
        print(f"{m:28s} {k:3d} {mean:9.3f} ± {ci:.3f} {pooled:8.3f}")
    # The methods are scored on the very same (unit, draw) tasks, so paired differences are the sharp test.
    paired = []
    print("\npaired difference, meta-learned minus baseline (negative = meta-learned better), mean ± 95% CI")
    for k in shots_list:
        ours = np.array(errors[(methods[0], k)])
        for m in methods[1:]:
            diff, ci = mean_ci(ours - np.array(errors[(m, k)]))
            paired.append({"baseline": m, "shots": k, "rmse_difference": diff, "ci": ci})
            print(f"k={k:2d} vs {m:26s} {diff:+.3f} ± {ci:.3f}")
    result = {"folds": FOLDS, "draws": args.draws, "algo": args.algo, "rows": rows, "paired": paired}
    print(f"written to {write_result('purpleair', result)}")


if __name__ == "__main__":
    main()

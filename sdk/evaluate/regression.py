"""Meta-evaluation of regression runs on held-out tasks, with honest baselines.

For ``n`` held-out tasks (split ``test``) with ``shots`` reference points each, it reports the error
of the meta-learned model after each requested number of inner steps, beside:

- *no adaptation*: the meta-learned initialisation as is (step 0);
- *scratch*: a freshly initialised network of the same shape trained on the support set (SGD at the
  inner rate for the same step counts, and Adam for ``adam_steps``);
- *transfer*: the same network pretrained on all meta-train tasks pooled, then fine-tuned the same
  ways (the standard transfer-learning baseline);
- *classic calibration* (sensor and table families): 2-point linear and least-squares fits, also
  with ``baseline_shots`` reference points, and any published formula the family knows.

Errors are in the family's physical units; each row gives the mean over tasks and a 95% CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..learners import MetaLearner
from ..train import Run, task_rng, to_tensors
from .classic import classic_predictions
from .finetune import adam_finetune, fresh_init, pretrain
from .stats import mean_ci, per_task_errors


@dataclass
class EvalSettings:
    """What to evaluate; the defaults follow MAML's sinusoid protocol."""

    tasks: int = 1000
    shots: int = 5
    queries: int = 100
    steps: list[int] = field(default_factory=lambda: [0, 1, 5, 10])
    baseline_shots: list[int] = field(default_factory=list)
    baselines: bool = True
    adam_steps: int = 100
    adam_lr: float = 0.01
    pretrain_steps: int = 2000
    seed: int = 1234
    chunk: int = 250


class Rows:
    """Accumulates per-task errors per (method, shots, steps) and summarises them."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, int, int | None], list[np.ndarray]] = {}

    def add(self, method: str, shots: int, steps: int | None, pred: np.ndarray, target: np.ndarray) -> None:
        err = per_task_errors(pred, target)
        self.errors.setdefault((method, shots, steps), []).append(np.stack([err["mse"], err["rmse"]]))

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for (method, shots, steps), chunks in self.errors.items():
            e = np.concatenate(chunks, axis=1)
            mse, mse_ci = mean_ci(e[0])
            rmse, rmse_ci = mean_ci(e[1])
            rows.append(
                {"method": method, "shots": shots, "steps": steps, "tasks": int(e.shape[1]),
                 "mse": mse, "mse_ci": mse_ci, "rmse": rmse, "rmse_ci": rmse_ci}
            )
        return rows


def evaluate_regression(run: Run, settings: EvalSettings, progress: bool = False) -> dict[str, Any]:
    """Evaluate ``run`` on ``settings.tasks`` held-out tasks; returns a JSON-able report."""
    fam, learner, norm = run.family, run.learner, run.normalizer
    s = settings
    if run.config.threads > 0:
        torch.set_num_threads(run.config.threads)
    if s.shots < 1 or s.tasks < 1:
        raise ValueError("--shots and --tasks must be positive")
    max_shots = max([s.shots, *s.baseline_shots])
    max_steps = max(s.steps)
    rng = np.random.default_rng(s.seed)
    rows = Rows()
    transfer = _transfer_params(run, s) if s.baselines else None
    scratch = fresh_init(learner.model, s.seed) if s.baselines else None
    done = 0
    bar = tqdm(total=s.tasks, disable=not progress, desc=f"eval {fam.name}", unit="task")
    while done < s.tasks:
        n = min(s.chunk, s.tasks - done)
        batch = fam.sample_batch(rng, n, max_shots, s.queries, split="test")
        nb = norm.batch(batch)
        xs, ys, xq, _ = to_tensors(nb)
        target = batch.y_query
        k = s.shots

        def physical(t: torch.Tensor) -> np.ndarray:
            return norm.y_inverse(t.cpu().numpy())

        traj = learner.adapt_batch(run.state, xs[:, :k], ys[:, :k], max_steps)
        for st in s.steps:
            pred = physical(learner.predict_batch(run.state, traj[st], xq))
            rows.add(f"metaedge {learner.algo}", k, st, pred, target)
        if s.baselines:
            for name, init in (("transfer", transfer), ("scratch", scratch)):
                _neural_baseline(rows, learner, name, init, xs[:, :k], ys[:, :k], xq, target, s, physical)
            if fam.calibration:
                for kb in sorted({k, *s.baseline_shots}):
                    preds = classic_predictions(batch.x_support[:, :kb], batch.y_support[:, :kb], batch.x_query,
                                                fam.primary_input)
                    for name, fit in getattr(fam, "physics_baselines", dict)().items():
                        preds[name] = np.stack([fit(a, b, c) for a, b, c in
                                                zip(batch.x_support[:, :kb], batch.y_support[:, :kb], batch.x_query)])
                    for method, pred in preds.items():
                        rows.add(f"classic {method}", kb, None, pred, target)
            for name, formula in getattr(fam, "known_formulas", dict)().items():
                pred = np.stack([formula(x) for x in batch.x_query])
                rows.add(f"formula {name}", 0, None, pred, target)
        done += n
        bar.update(n)
    bar.close()
    result = rows.summary()
    return {
        "family": fam.name,
        "algo": learner.algo,
        "task_kind": fam.task_kind,
        "metric": fam.metric,
        "units": list(fam.output_units),
        "settings": s.__dict__,
        "rows": result,
        "best_classic": _best_classic(result),
    }


def _neural_baseline(rows: Rows, learner: MetaLearner, name: str, init, xs, ys, xq, target, s: EvalSettings,
                     physical) -> None:
    """SGD at the inner rate for each requested step count, and Adam for ``adam_steps``, from ``init``."""
    inner = learner.inner
    rates = {k: torch.tensor(learner.inner_lr) for k in init}
    with torch.no_grad():
        traj = torch.func.vmap(lambda x, y: inner.adapt_trajectory(init, {}, rates, x, y, max(s.steps)))(xs, ys)
        fwd = torch.func.vmap(inner.forward, in_dims=(0, None, 0))
        for st in s.steps:
            rows.add(f"{name} (SGD)", xs.shape[1], st, physical(fwd(traj[st], {}, xq)), target)
        tuned = adam_finetune(inner, init, xs, ys, s.adam_steps, s.adam_lr)
        rows.add(f"{name} (Adam)", xs.shape[1], s.adam_steps, physical(fwd(tuned, {}, xq)), target)


def _transfer_params(run: Run, s: EvalSettings):
    """Pretrain the run's architecture on pooled meta-train tasks (cached in the run directory)."""
    cfg, fam, norm = run.config, run.family, run.normalizer

    def sample(step: int):
        b = norm.batch(fam.sample_batch(task_rng(cfg.seed + 7919, step), cfg.meta_batch, cfg.shots, cfg.queries))
        xs, ys, xq, yq = to_tensors(b)
        x = torch.cat([xs, xq], 1).flatten(0, 1)
        y = torch.cat([ys, yq], 1).flatten(0, 1)
        return x, y

    init = fresh_init(run.learner.model, cfg.seed + 1)
    return pretrain(run.learner.inner, init, sample, s.pretrain_steps, cache=run.path / "transfer.safetensors")


def _best_classic(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shot count, the classic polynomial row with the lowest mean error (degree chosen in hindsight)."""
    best: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["method"].startswith("classic LS polynomial") and (
            r["shots"] not in best or r["rmse"] < best[r["shots"]]["rmse"]
        ):
            best[r["shots"]] = r
    return [best[k] for k in sorted(best)]


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of a report, one row per (method, shots, steps)."""
    metric = report["metric"]
    unit = report["units"][0] if report["units"] and report["units"][0] else ""
    label = f"{metric.upper()}" + (f" [{unit}{'^2' if metric == 'mse' else ''}]" if unit else "")
    lines = [f"{report['family']} / {report['algo']}: {label}, mean ± 95% CI over tasks",
             f"{'method':38s} {'shots':>5s} {'steps':>5s} {label:>24s}"]
    for r in report["rows"]:
        steps = "-" if r["steps"] is None else str(r["steps"])
        shots = "-" if r["shots"] == 0 else str(r["shots"])
        lines.append(f"{r['method']:38s} {shots:>5s} {steps:>5s} {r[metric]:>14.4f} ± {r[metric + '_ci']:.4f}")
    return "\n".join(lines)

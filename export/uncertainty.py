"""Export step: meta-fit a regression bundle's predictive intervals on meta-validation tasks.

Fitted through the runtime itself (:class:`~metaedge.runtime.model.Model` on the staged bundle), so the device
computes exactly what was fitted. The tasks are drawn from the family's ``val`` split with their own seed stream
(``seed + 505``), never the evaluator's test tasks (``test`` split, seed 1234) nor training's (``[seed, iteration]``).

- ``gaussian-posterior`` (ridge): ``sigma_o^2`` is the mean of ``r_o^2 / (1 + j^T C j)`` over the validation
  queries (the maximum-likelihood noise variance of the posterior predictive, residuals ``r`` standardised), then
  the multiplier at each level is the split-conformal quantile of ``|r| / (sigma * sqrt(1 + j^T C j))``, i.e.
  ``calibration * z(level)`` with ``calibration`` 1 where the posterior predictive is exactly Gaussian.
- ``scaled-conformal`` (gradient learners): ``tau_o`` is the RMS query residual over the validation tasks, the
  spread of a task ``sqrt(support_mse_o + tau_o^2)``, the multiplier the split-conformal quantile of
  ``|r| / spread``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..runtime.manifest import Uncertainty
from ..sdk.evaluate.evaluator import IntervalMetrics
from ..sdk.run import Run, task_rng
from ..sdk.tasks import TaskBatch

#: the levels the multipliers are fitted for; the runtime interpolates between them
LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95, 0.98, 0.99)
#: meta-validation tasks and query points per task (units differ in residual scale: 500 tasks left the 95% level
#: of a load cell at 92.2% on held-out units, 2000 at 94.0%)
TASKS = 2000
QUERIES = 20


class NoCalibrationTasks(InputError):
    """The run's family offers no meta-validation tasks (its ``val`` split), so no interval can be fitted honestly
    (the test split is for evaluation, the training split would give intervals that are too narrow)."""


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores (the largest when that
    exceeds ``n``), which covers a new exchangeable score with probability at least ``level``."""
    ordered = np.sort(scores.ravel())
    rank = min(math.ceil((ordered.size + 1) * level), ordered.size)
    return float(ordered[rank - 1])


def fit_uncertainty(run: Run, folder: Path, tasks: int = TASKS, queries: int = QUERIES,
                    levels: tuple[float, ...] = LEVELS) -> Uncertainty:
    """The :class:`Uncertainty` of the regression bundle staged in ``folder`` (its ``manifest.json`` written),
    fitted on ``tasks`` meta-validation tasks of ``run``'s family with the run's number of shots."""
    from ..runtime.model import Model

    model = Model.load(folder, backend="auto", trust=())  # not signed yet
    manifest = model.bundle.manifest
    gaussian = model.interval_method == "gaussian-posterior"
    shots = run.config.shots
    try:
        batch = run.family.sample_batch(task_rng(run.config.seed + 505, 0), tasks, shots, queries, split="val")
    except InputError as e:  # e.g. a fleet table too small to hold out validation units
        raise NoCalibrationTasks(f"{run.family.name} has no meta-validation tasks to fit intervals on ({e})") from e
    y_std = np.asarray(manifest.normalization.y_std, np.float64)
    # the spread without the fitted scale: ridge with sigma = 1, conformal with tau = 0 (its square: support MSE)
    unscaled = np.full(manifest.output.dim, 1.0 if gaussian else 0.0)
    residuals, spreads = [], []
    for i in range(tasks):
        adapted = model.adapt(batch.x_support[i], batch.y_support[i])
        pred = adapted.predict(batch.x_query[i]).astype(np.float64)
        residuals.append((batch.y_query[i].reshape(pred.shape) - pred) / y_std)
        spreads.append(adapted.spread(batch.x_query[i], noise_scale=unscaled))
    r, s = np.concatenate(residuals), np.concatenate(spreads)  # (tasks * queries, out) each
    if gaussian:
        noise = np.sqrt((r**2 / s**2).mean(0))
        scores = np.abs(r) / (noise * s)
    else:
        noise = np.sqrt((r**2).mean(0))
        scores = np.abs(r) / np.sqrt(s**2 + noise**2)
    factors = tuple(conformal_quantile(scores, level) for level in levels)
    return Uncertainty(method=model.interval_method, noise_scale=tuple(float(v) for v in noise), levels=levels,
                       factors=factors, tasks=tasks, shots=shots)


def interval_metrics(bundle: str | Path, level: float) -> IntervalMetrics:
    """The evaluator's per-task ``coverage`` (share of query values inside the interval) and ``interval_width``
    (mean ``upper - lower``, physical units) of the runtime on ``bundle`` at ``level``."""
    from ..runtime.model import Model

    model = Model.load(bundle)

    def metrics(batch: TaskBatch, shots: int) -> dict[str, np.ndarray]:
        cover, width = [], []
        for i in range(len(batch.x_support)):
            adapted = model.adapt(batch.x_support[i][:shots], batch.y_support[i][:shots])
            iv = adapted.predict(batch.x_query[i], interval=level)
            y = batch.y_query[i].reshape(iv.lower.shape)
            cover.append(float(((y >= iv.lower) & (y <= iv.upper)).mean()))
            width.append(float((iv.upper - iv.lower).mean()))
        return {"coverage": np.asarray(cover), "interval_width": np.asarray(width)}

    return metrics

"""The point-selection curve of a regression bundle: its error against the number of reference points when the
points are guided (the runtime's :meth:`~metaedge.runtime.model.Model.suggest`), random, or fitted by the best
classic calibration (``metaedge eval --selection``, ``benchmarks/intervals.py``).

Pool-based: each held-out task offers a pool of settable points whose readings the simulator (or the table) knows;
every method picks its ``k`` points from that pool and is scored on the task's query points.

- ``guided``: a ``k``-point calibration planned as one design (``Model.suggest(pool, budget=k).plan``);
- ``guided (sequential)``: each next point the best alone given those taken (a session with a ``--target``);
- ``random``: the first ``k`` of a random order of the pool;
- ``best classic``: the best of 2-point linear / least-squares polynomial / multilinear on the same random points,
  picked per ``k`` in hindsight (which flatters it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .runtime.model import Model
from .sdk.evaluate.classic import classic_predictions
from .sdk.tasks import TaskFamily

METHODS = ("guided", "guided (sequential)", "random", "best classic")


@dataclass(frozen=True)
class SelectionCurve:
    """Mean error and its 95% CI over tasks per method and number of points ``1..max_points``.

    Attributes:
        metric: ``rmse`` (physical units) or ``mse``, the family's headline metric.
        points: ``(1, ..., max_points)``.
        mean: ``{method: (max_points,)}`` mean error over tasks.
        ci: ``{method: (max_points,)}`` 95% CI half-widths (1.96 standard errors).
        best_classic_method: the classic fit that was best at each ``k``.
    """

    metric: str
    tasks: int
    pool: int
    points: tuple[int, ...]
    mean: dict[str, tuple[float, ...]]
    ci: dict[str, tuple[float, ...]]
    best_classic_method: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "tasks": self.tasks, "pool": self.pool, "points": list(self.points),
                "mean": {k: list(v) for k, v in self.mean.items()}, "ci": {k: list(v) for k, v in self.ci.items()},
                "best_classic_method": list(self.best_classic_method)}


def _error(pred: np.ndarray, y: np.ndarray, metric: str) -> float:
    mse = float(((np.asarray(pred, np.float64).reshape(y.shape) - y) ** 2).mean())
    return mse if metric == "mse" else float(np.sqrt(mse))


def selection_curve(model: Model, family: TaskFamily, tasks: int = 100, max_points: int = 8, pool: int = 40,
                    queries: int = 50, split: str = "test", seed: int = 4321, order_seed: int = 7) -> SelectionCurve:
    """The curve on ``tasks`` held-out tasks of ``family`` (``split``, generator ``seed``), each with ``pool``
    settable points and ``queries`` points to score on; random orders come from generator ``order_seed``."""
    if model.classification:
        raise InputError("the point-selection curve is for regression bundles; this bundle classifies")
    if not 1 <= max_points <= pool:
        raise InputError(f"the number of reference points must be between 1 and the pool's {pool}, got {max_points}")
    metric = "mse" if family.metric == "mse" else "rmse"
    batch = family.sample_batch(np.random.default_rng(seed), tasks, pool, queries, split=split)
    rng = np.random.default_rng(order_seed)
    err = {m: np.zeros((tasks, max_points)) for m in METHODS if m != "best classic"}
    classic: list[dict[str, list[float]]] = [{} for _ in range(max_points)]
    for i in range(tasks):
        cx, cy, xq = batch.x_support[i], batch.y_support[i], batch.x_query[i]
        yq = batch.y_query[i].reshape(len(xq), -1).astype(np.float64)

        def score(idx: list[int] | np.ndarray, cx=cx, cy=cy, xq=xq, yq=yq) -> float:
            return _error(model.adapt(cx[idx], cy[idx]).predict(xq), yq, metric)

        chosen: list[int] = []
        for k in range(max_points):
            chosen.append(model.suggest(cx, support=cx[chosen] if chosen else None, exclude=chosen).index)
            err["guided (sequential)"][i, k] = score(chosen)
        for k in range(1, max_points + 1):
            err["guided"][i, k - 1] = score(list(model.suggest(cx, budget=k).plan))
        order = rng.permutation(pool)[:max_points]
        for k in range(1, max_points + 1):
            idx = order[:k]
            err["random"][i, k - 1] = score(idx)
            fits = classic_predictions(cx[idx][None], cy[idx].reshape(1, k, -1), xq[None])
            for name, p in fits.items():
                classic[k - 1].setdefault(name, []).append(_error(p[0], yq, metric))
    mean = {m: tuple(float(v) for v in e.mean(0)) for m, e in err.items()}
    ci = {m: tuple(float(v) for v in 1.96 * e.std(0, ddof=1) / np.sqrt(tasks)) if tasks > 1 else (0.0,) * max_points
          for m, e in err.items()}
    best = [min(c.items(), key=lambda kv: np.mean(kv[1])) for c in classic]
    mean["best classic"] = tuple(float(np.mean(v)) for _, v in best)
    ci["best classic"] = tuple(float(1.96 * np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
                               for _, v in best)
    return SelectionCurve(metric, tasks, pool, tuple(range(1, max_points + 1)), mean, ci,
                          tuple(name for name, _ in best))

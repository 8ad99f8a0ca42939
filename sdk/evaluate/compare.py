"""Two runs on the very same held-out tasks: the paired comparison a model update is decided on.

Both runs adapt from the same support points of the same tasks (drawn once), each through its own normaliser
and after its own trained number of inner steps; the per-task errors are paired, so task difficulty cancels
(:meth:`.evaluator.Rows.paired`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from ..run import Run, to_tensors
from ..tasks import TaskFamily
from .evaluator import Rows, task_metrics
from .stats import mean_ci


@dataclass(frozen=True)
class Comparison:
    """Mean headline error (``metric``, physical units) of each run ± 95% CI, and the paired difference
    ``candidate - champion`` ± its 95% CI (negative: the candidate is better), over ``tasks`` tasks drawn from
    ``units`` distinct units (0 for a generative family, where every task is a new unit)."""

    metric: str
    tasks: int
    units: int
    candidate: float
    candidate_ci: float
    champion: float
    champion_ci: float
    difference: float
    difference_ci: float
    #: the family's split the tasks came from
    split: str = "test"

    @property
    def relative_change(self) -> float:
        """``candidate / champion - 1``: -0.3 is a 30% lower error."""
        return self.candidate / self.champion - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative_change": self.relative_change}


def paired_errors(candidate: Run, champion: Run, family: TaskFamily, tasks: int = 500, shots: int = 3,
                  queries: int = 20, split: str = "test", seed: int = 1234, chunk: int = 250
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-task headline errors ``(tasks,)`` of the candidate and of the champion, each adapted on the same
    ``shots`` support points of the same tasks of ``family``'s ``split`` (drawn once from ``seed``), scored on
    their ``queries`` query points; and the number of distinct units they came from (0: a generative family)."""
    if family.task_kind != "regression":
        raise InputError(f"compare_runs scores regression runs; {family.name} is a {family.task_kind} family")
    if tasks < 2:
        raise InputError(f"tasks={tasks}: a paired 95% CI needs at least 2 tasks")
    errors: dict[str, list[np.ndarray]] = {"candidate": [], "champion": []}
    rng, units, done = np.random.default_rng(seed), set(), 0
    while done < tasks:
        batch = family.sample_batch(rng, min(chunk, tasks - done), shots, queries, split=split)
        units.update(str(i["unit"]) for i in batch.info if "unit" in i)
        for label, run in (("candidate", candidate), ("champion", champion)):
            steps = run.learner.inner_steps if run.learner.has_inner_loop else 0
            xs, ys, xq, _ = to_tensors(run.normalizer.batch(batch))
            pred = run.learner.predictions_after_steps(run.state, xs, ys, xq, [steps])[steps]
            physical = run.normalizer.y_inverse(pred.detach().cpu().numpy())
            errors[label].append(task_metrics("regression", physical, batch.y_query)[family.metric])
        done += len(batch)
    return np.concatenate(errors["candidate"]), np.concatenate(errors["champion"]), len(units)


def compare_runs(candidate: Run, champion: Run, family: TaskFamily, tasks: int = 500, shots: int = 3,
                 queries: int = 20, split: str = "test", seed: int = 1234, chunk: int = 250) -> Comparison:
    """Adapt both runs on ``tasks`` tasks of ``family``'s ``split`` (``shots`` support, ``queries`` query points
    each, drawn once from ``seed``) and pair their per-task errors (:func:`paired_errors`)."""
    cand, champ, units = paired_errors(candidate, champion, family, tasks, shots, queries, split, seed, chunk)
    rows = Rows(family.metric)
    rows.add("candidate", None, shots, 0, {family.metric: cand})
    rows.add("champion", None, shots, 0, {family.metric: champ})
    paired = rows.paired("candidate", 0)[0]
    return Comparison(family.metric, tasks, units, *mean_ci(cand), *mean_ci(champ), paired["difference"],
                      paired["difference_ci"], split)

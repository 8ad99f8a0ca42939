"""compare_runs: two runs on the same held-out tasks, checked against the evaluator and a per-task loop."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, compare_runs, evaluate
from metaedge.sdk.run import Run, to_tensors
from metaedge.sdk.train import train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    cfg = dict(family="sensor-pressure", algo="ridge", shots=3, queries=5, meta_batch=4, hidden=[8, 8],
               activation="tanh", skip=True, log_every=5, checkpoint_every=5)
    champion = train(TrainConfig(iterations=5, **cfg), root / "champion", progress=False)
    candidate = train(TrainConfig(iterations=5, init_from=str(champion), meta_lr=0.01, **cfg), root / "candidate",
                      progress=False)
    return Run.load(candidate), Run.load(champion)


def _per_task_rmse(run: Run, batch) -> np.ndarray:
    out = []
    for i in range(len(batch)):
        t = batch.task(i)
        b = type(batch).stack([t])
        xs, ys, xq, _ = to_tensors(run.normalizer.batch(b))
        steps = run.learner.inner_steps
        pred = run.normalizer.y_inverse(run.learner.predictions_after_steps(run.state, xs, ys, xq, [steps])[steps]
                                        .numpy())
        out.append(np.sqrt(np.mean((pred.astype(np.float64) - t.y_query.astype(np.float64)) ** 2)))
    return np.array(out)


def test_compare_matches_the_evaluator_and_a_per_task_loop(two_runs):
    candidate, champion = two_runs
    fam = champion.family
    c = compare_runs(candidate, champion, fam, tasks=40, shots=3, queries=20, seed=7, chunk=16)
    for run, value in ((candidate, c.candidate), (champion, c.champion)):
        report = evaluate(run, EvalSettings(tasks=40, shots=[3], queries=20, steps=[1], baselines=False, seed=7,
                                            chunk=16))
        row = next(r for r in report["rows"] if r["method"] == "metaedge ridge" and r["steps"] == 1)
        assert value == pytest.approx(row["rmse"], rel=1e-9)
    rng = np.random.default_rng(7)
    batches = [fam.sample_batch(rng, n, 3, 20, split="test") for n in (16, 16, 8)]
    diff = np.concatenate([_per_task_rmse(candidate, b) - _per_task_rmse(champion, b) for b in batches])
    assert c.difference == pytest.approx(diff.mean(), rel=1e-4, abs=1e-6)
    assert c.difference_ci == pytest.approx(1.96 * diff.std(ddof=1) / np.sqrt(diff.size), rel=1e-3)
    assert c.tasks == 40 and c.units == 0 and c.relative_change == pytest.approx(c.candidate / c.champion - 1)


def test_a_run_against_itself_differs_by_exactly_zero(two_runs):
    _, champion = two_runs
    c = compare_runs(champion, champion, champion.family, tasks=10, seed=3)
    assert c.difference == 0.0 and c.difference_ci == 0.0 and c.candidate == c.champion

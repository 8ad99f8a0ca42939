"""Evaluator: statistics, classic calibration fits, and an end-to-end report on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, evaluate, format_table, mean_ci
from metaedge.sdk.evaluate.classic import classic_predictions, multilinear, polynomial, two_point
from metaedge.sdk.run import Run
from metaedge.sdk.train import train


def test_mean_ci_matches_normal_approximation():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, half = mean_ci(values)
    assert mean == 2.5
    assert half == pytest.approx(1.96 * np.std(values, ddof=1) / 2)


def test_classic_fits_are_exact_on_their_own_model_class():
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 10, (4, 2))
    xq = rng.uniform(0, 10, (9, 2))
    line = lambda x: (3.0 - 0.5 * x[:, :1])  # noqa: E731
    cubic = lambda x: (1 + x[:, :1] - 0.2 * x[:, :1] ** 2 + 0.01 * x[:, :1] ** 3)  # noqa: E731
    plane = lambda x: (1.0 + 2.0 * x[:, :1] - 0.3 * x[:, 1:])  # noqa: E731
    np.testing.assert_allclose(two_point(xs, line(xs), xq), line(xq), atol=1e-9)
    np.testing.assert_allclose(polynomial(xs, cubic(xs), xq, 3), cubic(xq), atol=1e-8)
    np.testing.assert_allclose(multilinear(xs, plane(xs), xq), plane(xq), atol=1e-9)


def test_classic_predictions_offers_what_k_points_allow():
    xs, ys, xq = np.zeros((2, 3, 2)), np.zeros((2, 3, 1)), np.zeros((2, 5, 2))
    xs[..., 0] = [1, 2, 3]
    names = set(classic_predictions(xs, ys, xq))
    assert names == {"2-point linear", "LS polynomial deg 1", "LS polynomial deg 2", "LS multilinear"}
    assert "LS multilinear" not in classic_predictions(xs[:, :2], ys[:, :2], xq)  # needs k >= inputs + 1
    assert classic_predictions(xs, ys, xq)["2-point linear"].shape == (2, 5, 1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ntc"
    cfg = TrainConfig(family="sensor-ntc", algo="metasgd", shots=3, queries=10, meta_batch=8, iterations=30,
                      hidden=[16, 16], activation="tanh", log_every=10, checkpoint_every=30)
    return Run.load(train(cfg, out, progress=False))


def test_report_has_every_method_with_cis(tiny_run):
    settings = EvalSettings(tasks=40, shots=3, queries=20, steps=[0, 2], baseline_shots=[10], adam_steps=5,
                            pretrain_steps=20, chunk=16)
    report = evaluate(tiny_run, settings)
    methods = {(r["method"], r["shots"], r["steps"]) for r in report["rows"]}
    assert ("metaedge metasgd", 3, 0) in methods and ("metaedge metasgd", 3, 2) in methods
    assert ("transfer (SGD)", 3, 2) in methods and ("scratch (Adam)", 3, 5) in methods
    assert ("classic 2-point linear", 10, None) in methods and ("classic Steinhart-Hart 3-term", 3, None) in methods
    assert all(r["tasks"] == 40 and r["rmse_ci"] > 0 for r in report["rows"])
    assert report["metric"] == "rmse" and report["units"] == ["degC"]
    assert (tiny_run.path / "transfer.safetensors").is_file()  # pretrained baseline is cached
    text = format_table(report)
    assert "RMSE [degC]" in text and "classic 2-point linear" in text
    paired = {(p["method"], p["shots"]): p for p in report["paired"]}
    assert ("classic 2-point linear", 10) in paired and "paired difference" in text
    rows = {(r["method"], r["shots"], r["steps"]): r for r in report["rows"]}
    # the mean of paired differences equals the difference of means (same tasks, same order)
    ref = rows[("metaedge metasgd", 3, 2)]["rmse"] - rows[("classic 2-point linear", 10, None)]["rmse"]
    assert paired[("classic 2-point linear", 10)]["difference"] == pytest.approx(ref)


def test_report_is_deterministic_for_a_seed(tiny_run):
    settings = EvalSettings(tasks=10, shots=3, queries=10, steps=[1], baselines=False)
    a = evaluate(tiny_run, settings)["rows"]
    b = evaluate(tiny_run, settings)["rows"]
    assert a == b

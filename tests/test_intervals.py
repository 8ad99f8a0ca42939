"""Predictive intervals and guided reference points: the ridge posterior predictive against a float64 PyTorch
reference, Woodbury variance reductions against recomputed posteriors, coverage on held-out units, the manifest
part, the CLI columns, and one-sentence refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metaedge.cli import main
from metaedge.errors import InputError
from metaedge.export.uncertainty import conformal_quantile
from metaedge.runtime.intervals import plan_design, posterior_covariance, variance_reduction
from metaedge.runtime.manifest import Manifest, ManifestError
from metaedge.runtime.model import Adapted, Model
from metaedge.sdk.run import Run
from metaedge.sdk.tasks import make_family


def _units(n, k=3, q=40, seed=1234):
    """Held-out units of the family's test split (the export fitted on its val split with another seed)."""
    return make_family("sensor-pressure").sample_batch(np.random.default_rng(seed), n, k, q, split="test")


def test_ridge_manifest_states_the_gaussian_posterior_fit(ridge_bundle):
    u = Model.load(ridge_bundle).uncertainty
    assert u.method == "gaussian-posterior" and u.shots == 3 and u.tasks == 2000
    assert u.levels == (0.5, 0.68, 0.8, 0.9, 0.95, 0.98, 0.99) and len(u.noise_scale) == 1
    assert all(b > a for a, b in zip(u.factors, u.factors[1:]))
    # the calibration factor (multiplier / z) of a near-Gaussian posterior predictive is close to 1
    from statistics import NormalDist

    calibration = u.factors[u.levels.index(0.95)] / NormalDist().inv_cdf(0.975)
    assert 0.8 < calibration < 1.3, calibration


def test_ridge_spread_is_the_posterior_predictive_of_a_float64_reference(ridge_bundle):
    """sigma * sqrt(1 + j^T (J^T J + Lambda)^-1 j) with J, j from PyTorch's Jacobian (GaussNewtonLoop.system)."""
    model = Model.load(ridge_bundle, backend="onnxruntime")
    run = Run.load(ridge_bundle.parent / "run")
    batch = _units(2)
    for i in range(2):
        xs, ys, xq = batch.x_support[i], batch.y_support[i], batch.x_query[i]
        adapted = model.adapt(xs, ys)
        nb = run.normalizer
        fast, frozen = run.learner.split(run.state["params"])
        theta = {n: torch.from_numpy(v.copy()).double() for n, v in model.layout.split(adapted.theta).items()}
        frozen64 = {n: v.double() for n, v in frozen.items()}
        loop = run.learner.inner
        with torch.no_grad():
            js, _ = loop.system(theta, frozen64, torch.as_tensor(nb.x(xs)).double(), torch.as_tensor(nb.y(ys)).double())
            jq, _ = loop.system(theta, frozen64, torch.as_tensor(nb.x(xq)).double(),
                                torch.zeros(len(xq), 1, dtype=torch.float64))
        rates = torch.cat([run.state["rates"][n].reshape(-1) for n in fast]).double()
        lam = rates.exp() + model.bundle.manifest.adaptation.min_damping
        cov = torch.linalg.inv(js.T @ js + torch.diag(lam))
        sigma = model.uncertainty.noise_scale[0]
        ref = sigma * torch.sqrt(1 + torch.einsum("np,pq,nq->n", jq, cov, jq)).numpy()
        np.testing.assert_allclose(adapted.spread(xq)[:, 0], ref, rtol=2e-4)
        iv = adapted.predict(xq, interval=0.95)
        half = model.uncertainty.factors[4] * ref * model.bundle.manifest.normalization.y_std[0]
        np.testing.assert_allclose(iv.upper[:, 0] - iv.prediction[:, 0], half, rtol=3e-4)
        np.testing.assert_allclose(iv.prediction, adapted.predict(xq), rtol=0, atol=0)


def test_backends_give_the_same_intervals_and_suggestions(ridge_bundle):
    batch = _units(1)
    native, onnx = (Model.load(ridge_bundle, backend=b) for b in ("native", "onnxruntime"))
    a, b = (m.adapt(batch.x_support[0], batch.y_support[0]).predict(batch.x_query[0], interval=0.9)
            for m in (native, onnx))
    np.testing.assert_allclose(a.lower, b.lower, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.upper, b.upper, rtol=1e-5, atol=1e-4)
    sa, sb = (m.suggest(batch.x_query[0], support=batch.x_support[0]) for m in (native, onnx))
    assert sa.index == sb.index
    np.testing.assert_allclose(sa.scores, sb.scores, rtol=1e-3)


@pytest.mark.parametrize("which", ["ridge", "metasgd"])
def test_coverage_on_held_out_units_is_near_nominal(which, ridge_bundle, small_bundle):
    """300 held-out units x 40 points: nominal 95% and 80% intervals cover within a few points of nominal."""
    model = Model.load(ridge_bundle if which == "ridge" else small_bundle)
    assert model.uncertainty.method == ("gaussian-posterior" if which == "ridge" else "scaled-conformal")
    batch = _units(300)
    for level, (lo, hi) in ((0.95, (0.92, 0.975)), (0.8, (0.75, 0.85))):
        hits = []
        for i in range(300):
            iv = model.adapt(batch.x_support[i], batch.y_support[i]).predict(batch.x_query[i], interval=level)
            y = batch.y_query[i].reshape(iv.lower.shape)
            hits.append(((y >= iv.lower) & (y <= iv.upper)).mean())
        assert lo <= np.mean(hits) <= hi, (which, level, np.mean(hits))


def test_variance_reduction_equals_recomputed_posteriors():
    """Woodbury reductions against the integrated variance after refitting the posterior with each candidate."""
    rng = np.random.default_rng(0)
    m, out, p = 12, 2, 5
    jc = rng.normal(size=(m, out, p))
    js = rng.normal(size=(3 * out, p))
    damping = rng.uniform(0.1, 2, p)
    w = np.array([1.0, 4.0])

    def integrated(cov):
        return float((w * np.einsum("mop,pq,moq->mo", jc, cov, jc)).sum())

    cov = posterior_covariance(js, damping)
    brute = [integrated(cov) - integrated(posterior_covariance(np.vstack([js, jc[k]]), damping)) for k in range(m)]
    np.testing.assert_allclose(variance_reduction(jc, cov, w), brute, rtol=1e-9)


def test_planned_designs_are_the_best_sets_found_by_exhaustive_search():
    """Greedy plus exchange against every subset, on random problems where greedy alone is not optimal: never
    worse than greedy, and the optimum itself nearly always (exchange can stop at a local optimum)."""
    from itertools import combinations

    rng = np.random.default_rng(3)
    beaten = optimal = 0
    for trial in range(30):
        m, out, p = 9, 1 + trial % 2, 4
        jc = rng.normal(size=(m, out, p)) * rng.uniform(0.2, 3, size=(m, 1, 1))
        damping = rng.uniform(0.05, 1, p)
        w = rng.uniform(0.5, 2, out)
        cov = posterior_covariance(np.zeros((0, p)), damping)

        def after(subset, jc=jc, p=p, w=w, damping=damping):
            rows = jc[list(subset)].reshape(-1, p)
            return float((w * np.einsum("mop,pq,moq->mo", jc, posterior_covariance(rows, damping), jc)).sum())

        exclude = np.zeros(m, bool)
        exclude[trial % m] = True
        allowed = [i for i in range(m) if not exclude[i]]
        best = min(after(s) for s in combinations(allowed, 3))
        plan = plan_design(jc, cov, w, 3, exclude)
        assert len(set(plan.tolist())) == 3 and not exclude[plan].any()
        optimal += after(plan) <= best * (1 + 1e-9)
        greedy = []
        for _ in range(3):
            g = variance_reduction(jc, posterior_covariance(jc[greedy].reshape(-1, p), damping), w)
            g[greedy + [trial % m]] = -np.inf
            greedy.append(int(np.argmax(g)))
        beaten += after(greedy) > best * (1 + 1e-9)
        assert after(plan) <= after(greedy) * (1 + 1e-9)
    assert beaten >= 3 and optimal >= 28, (beaten, optimal)  # the problems do separate greedy from the optimum


def test_suggest_with_a_budget_plans_the_remaining_points(ridge_bundle):
    model = Model.load(ridge_bundle)
    batch = _units(1, k=2, q=25)
    candidates, xs = batch.x_query[0], batch.x_support[0]
    s = model.suggest(candidates, support=xs, budget=5, exclude=[0, 1])
    assert s.method == "posterior-variance-design" and len(s.plan) == 3 and s.plan[0] == s.index
    assert not {0, 1} & set(s.plan) and s.scores[s.index] == max(s.scores[list(s.plan)])
    plain = model.suggest(candidates, support=xs)
    assert plain.plan == (plain.index,)
    for budget in (2, 0, 2.5, True):
        with pytest.raises(InputError, match="budget must be a whole number"):
            model.suggest(candidates, support=xs, budget=budget)
    with pytest.raises(InputError, match="exclude must hold candidate indices below 25"):
        model.suggest(candidates, exclude=[25])
    with pytest.raises(InputError, match="every candidate is excluded"):
        model.suggest(candidates, exclude=range(25))


def test_suggest_picks_the_candidate_that_lowers_the_mean_width_most(ridge_bundle):
    model = Model.load(ridge_bundle)
    batch = _units(1, k=2, q=25)
    candidates, xs, ys = batch.x_query[0], batch.x_support[0], batch.y_support[0]
    s = model.suggest(candidates, support=xs)
    assert s.method == "posterior-variance-reduction" and s.scores.shape == (25,)
    np.testing.assert_array_equal(s.point, candidates[s.index])
    # the integrated predictive variance after taking each candidate (its reading does not matter: use the truth)
    after = []
    for k in range(25):
        a = model.adapt(np.vstack([xs, candidates[k:k + 1]]), np.vstack([ys, batch.y_query[0][k:k + 1]]))
        after.append(float((a.spread(candidates) ** 2).sum()))
    assert int(np.argmin(after)) == s.index
    first = model.suggest(candidates)  # no support yet: the prior
    assert 0 <= first.index < 25 and np.isfinite(first.scores).all()


def test_gradient_learners_suggest_the_farthest_candidate(small_bundle):
    model = Model.load(small_bundle)
    cand = np.array([[10.0, 20.0], [15.0, 25.0], [30.0, 60.0]], np.float32)
    s = model.suggest(cand, support=np.array([[10.0, 20.0]], np.float32))
    assert s.method == "farthest-from-support" and s.index == 2


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 20.0)  # 19 scores: the 0.95 quantile is the ceil(20 * 0.95) = 19th
    assert conformal_quantile(scores, 0.95) == 19.0
    assert conformal_quantile(scores, 0.5) == 10.0
    assert conformal_quantile(scores[:5], 0.99) == 5.0  # capped at the largest


def test_manifest_part_round_trips_and_older_bundles_load(ridge_bundle):
    raw = json.loads((ridge_bundle / "manifest.json").read_text())
    m = Manifest.parse(raw)
    assert Manifest.parse(json.loads(m.to_json())) == m
    old = {k: v for k, v in raw.items() if k != "uncertainty"}
    assert Manifest.parse(old).uncertainty is None
    bad = {**raw, "uncertainty": {**raw["uncertainty"], "factors": raw["uncertainty"]["factors"][:-1]}}
    with pytest.raises(ManifestError, match=r"manifest field uncertainty.factors must hold one number per level"):
        Manifest.parse(bad)
    bad = {**raw, "uncertainty": {**raw["uncertainty"], "levels": [0.9, 0.5, 0.8, 0.95, 0.96, 0.98, 0.99]}}
    with pytest.raises(ManifestError, match=r"uncertainty.levels must be increasing"):
        Manifest.parse(bad)


def test_refusals_are_one_sentence(ridge_bundle, tmp_path):
    model = Model.load(ridge_bundle)
    batch = _units(1)
    adapted = model.adapt(batch.x_support[0], batch.y_support[0])
    with pytest.raises(InputError, match=r"between 0.5 and 0.99 .* got 0.999"):
        adapted.predict(batch.x_query[0], interval=0.999)
    for bad in (float("nan"), "high", True):
        with pytest.raises(InputError, match="interval level must be a number between 0.5 and 0.99"):
            adapted.predict(batch.x_query[0], interval=bad)
    np.testing.assert_allclose(adapted.predict(batch.x_query[0], interval=np.float32(0.95)).upper,
                               adapted.predict(batch.x_query[0], interval=0.95).upper, rtol=1e-6)
    adapted.save(tmp_path / "state.bin")
    with pytest.raises(InputError, match="has no support set"):
        Adapted.load(model, tmp_path / "state.bin").predict(batch.x_query[0], interval=0.95)
    reloaded = Adapted.load(model, tmp_path / "state.bin", support=(batch.x_support[0], batch.y_support[0]))
    np.testing.assert_allclose(reloaded.predict(batch.x_query[0], interval=0.95).upper,
                               adapted.predict(batch.x_query[0], interval=0.95).upper)
    old = tmp_path / "old.meb"
    shutil.copytree(ridge_bundle, old)
    raw = json.loads((old / "manifest.json").read_text())
    del raw["uncertainty"]
    (old / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match="holds no fitted predictive intervals .* re-export"):
        Model.load(old).adapt(batch.x_support[0], batch.y_support[0]).predict(batch.x_query[0], interval=0.95)


def test_cli_predict_writes_lower_and_upper_columns(ridge_bundle, tmp_path):
    batch = _units(1, q=4)
    (tmp_path / "s.csv").write_text("bridge_output,temperature,pressure\n" + "\n".join(
        f"{a},{b},{c}" for (a, b), (c,) in zip(batch.x_support[0], batch.y_support[0])))
    (tmp_path / "x.csv").write_text("bridge_output,temperature\n" + "\n".join(
        f"{a},{b}" for a, b in batch.x_query[0]))
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(ridge_bundle), "--input", str(tmp_path / "x.csv"), "--support",
                                  str(tmp_path / "s.csv"), "--interval", "0.95", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "pressure,pressure_lower,pressure_upper"
    iv = Model.load(ridge_bundle).adapt(batch.x_support[0], batch.y_support[0]).predict(batch.x_query[0],
                                                                                          interval=0.95)
    got = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(got, np.hstack([iv.prediction, iv.lower, iv.upper]), rtol=1e-5)
    result = runner.invoke(main, ["predict", str(ridge_bundle), "--input", str(tmp_path / "x.csv"),
                                  "--interval", "0.95"])
    assert result.exit_code == 2 and "--interval needs --support" in result.output


def test_c_library_equals_the_python_runtime(ridge_bundle):
    """me_predict_interval, me_suggest and me_plan_points (format-4 model.mebin) against the Python runtime (ONNX
    Runtime's exact Jacobian), to 1e-5 relative to the values' scale."""
    from metaedge.runtime.native import NativeModel

    c_model = NativeModel((ridge_bundle / "model.mebin").read_bytes())
    assert c_model.header.format_version == 4
    model = Model.load(ridge_bundle, backend="onnxruntime")
    batch = _units(3, q=30)
    worst = 0.0
    for i in range(3):
        xs, ys, xq = batch.x_support[i], batch.y_support[i], batch.x_query[i]
        adapted = model.adapt(xs, ys)
        for level in (0.8, 0.95, 0.9):
            iv = adapted.predict(xq, interval=level)
            out, lo, hi = c_model.predict_interval(adapted.theta, xs, xq, level)
            scale = max(1.0, float(np.abs(iv.upper).max()))
            worst = max(worst, *(float(np.abs(a - b).max()) / scale
                                 for a, b in ((out, iv.prediction), (lo, iv.lower), (hi, iv.upper))))
        for support in (xs, None):
            ours = model.suggest(xq, support=support)
            best, scores = c_model.suggest(model.theta0, support, xq)
            assert best == ours.index
            np.testing.assert_allclose(scores, ours.scores, rtol=1e-5, atol=1e-5 * float(ours.scores.max()))
            for budget, exclude in ((4, None), (6, [0, 5, 7])):  # me_plan_points: the same planned design
                k = 0 if support is None else len(support)
                planned = model.suggest(xq, support=support, budget=budget + k, exclude=exclude or ())
                blocked = np.isin(np.arange(len(xq)), exclude or [])
                assert c_model.plan_points(model.theta0, support, xq, budget, blocked) == list(planned.plan)
    assert worst <= 1e-5, worst
    with pytest.raises(InputError, match="invalid argument"):
        c_model.predict_interval(model.theta0, batch.x_support[0], batch.x_query[0], 0.999)


def test_eval_interval_rows_are_the_runtime_coverage_on_the_same_tasks(ridge_bundle):
    result = CliRunner().invoke(main, ["eval", str(ridge_bundle.parent / "run"), "--tasks", "60", "--shots", "3",
                                       "--steps", "0,1", "--no-baselines", "--interval", "0.9", "--bundle",
                                       str(ridge_bundle), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = {r["steps"]: r for r in json.loads(result.output[result.output.index("{"):])["rows"]}
    assert "coverage" not in rows[0]
    # the evaluator's held-out tasks (seed 1234, test split, 100 queries), recomputed with the runtime
    batch = make_family("sensor-pressure").sample_batch(np.random.default_rng(1234), 60, 3, 100, split="test")
    model = Model.load(ridge_bundle)
    cover, width = [], []
    for i in range(60):
        iv = model.adapt(batch.x_support[i], batch.y_support[i]).predict(batch.x_query[i], interval=0.9)
        y = batch.y_query[i].reshape(iv.lower.shape)
        cover.append(((y >= iv.lower) & (y <= iv.upper)).mean())
        width.append((iv.upper - iv.lower).mean())
    assert rows[1]["coverage"] == pytest.approx(np.mean(cover), abs=1e-9)
    assert rows[1]["interval_width"] == pytest.approx(np.mean(width), rel=1e-6)


def test_selection_curve_recomputed_and_reported_by_eval(ridge_bundle, tmp_path):
    from metaedge.sdk.evaluate.classic import classic_predictions
    from metaedge.selection import selection_curve

    model, fam = Model.load(ridge_bundle), make_family("sensor-pressure")
    curve = selection_curve(model, fam, tasks=4, max_points=3, pool=10, queries=20, seed=99, order_seed=5)
    assert curve.points == (1, 2, 3) and set(curve.mean) == {"guided", "guided (sequential)", "random",
                                                             "best classic"}
    batch = fam.sample_batch(np.random.default_rng(99), 4, 10, 20, split="test")
    rng = np.random.default_rng(5)
    want = {"guided": np.zeros((4, 3)), "random": np.zeros((4, 3))}
    for i in range(4):
        cx, cy, xq, yq = batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i]

        def rmse(idx, cx=cx, cy=cy, xq=xq, yq=yq):
            return np.sqrt(((model.adapt(cx[idx], cy[idx]).predict(xq) - yq.reshape(-1, 1)) ** 2).mean())

        order = rng.permutation(10)[:3]
        for k in range(1, 4):
            want["guided"][i, k - 1] = rmse(list(model.suggest(cx, budget=k).plan))
            want["random"][i, k - 1] = rmse(order[:k])
    for m, values in want.items():
        np.testing.assert_allclose(curve.mean[m], values.mean(0), rtol=1e-6)
    # best classic: no classic fit's mean beats the one reported (on the same random points)
    for k in range(1, 4):
        rng = np.random.default_rng(5)
        errs: dict[str, list[float]] = {}
        for i in range(4):
            idx = rng.permutation(10)[:3][:k]
            fits = classic_predictions(batch.x_support[i][idx][None], batch.y_support[i][idx].reshape(1, k, -1),
                                       batch.x_query[i][None])
            for name, p in fits.items():
                errs.setdefault(name, []).append(np.sqrt(((p[0].reshape(-1) - batch.y_query[i].reshape(-1)) ** 2)
                                                         .mean()))
        assert curve.mean["best classic"][k - 1] == pytest.approx(min(np.mean(v) for v in errs.values()), rel=1e-6)
    # metaedge eval --selection: the same curve on the evaluator's split and seed, in the JSON, table and report
    args = ["eval", str(ridge_bundle.parent / "run"), "--tasks", "10", "--shots", "3", "--steps", "1",
            "--no-baselines", "--selection", "2", "--selection-tasks", "3", "--bundle", str(ridge_bundle),
            "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output[result.output.index("{"):])["selection"]
    direct = selection_curve(model, fam, tasks=3, max_points=2, seed=1234).to_json()
    assert got["points"] == [1, 2] and got["mean"].keys() == direct["mean"].keys()
    for m, values in direct["mean"].items():
        assert got["mean"][m] == pytest.approx(values, rel=1e-6)
    result = CliRunner().invoke(main, [*args, "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "RMSE against reference points" in result.output and (tmp_path / "rep" / "selection.png").stat().st_size
    with pytest.raises(InputError, match="between 1 and the pool's 40"):
        selection_curve(model, fam, tasks=2, max_points=41)

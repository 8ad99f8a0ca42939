"""Model-based adaptive control: dynamics families, the runtime Controller and `metaedge control` (issue 14)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from isolation import run_without

from metaedge.cli import main
from metaedge.control_cli import CONTROLLERS, default_policies, evaluate_control
from metaedge.errors import InputError
from metaedge.runtime.control import Controller
from metaedge.runtime.manifest import Control
from metaedge.runtime.model import Model
from metaedge.sdk.tasks import make_family
from metaedge.sdk.tasks.dynamics import DynamicsFamily, Region, advance
from metaedge.sdk.tasks.systems import Pendulum

#: a cheaper planner than the family's, so closed-loop tests stay fast
FAST = {"window": 10, "adapt_every": 2, "candidates": 32, "horizon": 15, "iterations": 2, "elites": 6}


@pytest.fixture(scope="module")
def dynamics_bundle(tmp_path_factory):
    """A small pendulum-dynamics ridge bundle (tanh features + skip, 400 meta-iterations, M = 10) with the C
    library's model, trained and exported once for this module."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    root = tmp_path_factory.mktemp("control")
    run = train(TrainConfig(family="pendulum-dynamics", algo="ridge", shots=10, queries=30, meta_batch=8,
                            iterations=400, hidden=[16, 16], activation="tanh", skip=True, meta_lr=3e-3,
                            inner_lr=0.1, control=FAST), root / "run", progress=False)
    return export_bundle(run, root / "pendulum.meb", check=False, intervals=False)


class _Quiet(Pendulum):
    process_noise = (0.0, 0.0)


def test_family_inputs_targets_and_trajectories_are_the_simulators():
    fam = DynamicsFamily(_Quiet(), "quiet", Region((-np.pi, -10.0), (np.pi, 10.0)), {}, 50)
    b = fam.sample_batch(np.random.default_rng(0), 5, 12, 400)
    assert (b.x_support.shape, b.y_support.shape, b.x_query.shape, b.y_query.shape) == (
        (5, 12, 3), (5, 12, 2), (5, 400, 3), (5, 400, 2))
    sys = fam.system
    for i in range(5):
        params = np.asarray(b.info[i]["unit_params"])[None]
        for x, y in ((b.x_support[i], b.y_support[i]), (b.x_query[i], b.y_query[i])):
            want = sys.delta(np.repeat(params, len(x), 0), x[:, :2].astype(np.float64), x[:, 2:].astype(np.float64))
            assert np.allclose(y, want, atol=2e-5)
        # the support is one trajectory: each state is the last one advanced by its change
        s = b.x_support[i, :, :2].astype(np.float64)
        assert np.allclose(advance(sys, s[:-1].copy(), b.y_support[i, :-1].astype(np.float64)), s[1:], atol=1e-5)
    q = b.x_query.reshape(-1, 3)
    assert q[:, 0].min() < -3.0 and q[:, 0].max() > 3.0 and q[:, 1].min() < -9 and q[:, 1].max() > 9
    assert np.abs(q[:, 2]).max() <= 1.0


def test_registered_families_add_the_process_noise_and_state_a_valid_controller():
    for name, steps in (("pendulum-dynamics", 120), ("dc-motor-dynamics", 100)):
        fam = make_family(name)
        b = fam.sample_batch(np.random.default_rng(1), 40, 10, 50)
        x, y = b.x_query, b.y_query
        params = np.repeat(np.stack([np.asarray(i["unit_params"]) for i in b.info]), 50, 0)
        clean = fam.system.delta(params, x.reshape(-1, 3)[:, :2].astype(np.float64),
                                 x.reshape(-1, 3)[:, 2:].astype(np.float64))
        noise = (y.reshape(-1, 2) - clean).std(0)
        assert np.allclose(noise, fam.system.process_noise, rtol=0.1)
        spec = Control._read(fam.control_defaults, "control")
        assert spec.state_dim == 2 and spec.action_dim == 1 and spec.dt == fam.system.dt
        assert fam.describe()["episode_steps"] == steps == fam.episode_steps
        assert fam.input_names == (*fam.system.state_names, *fam.system.action_names)
    assert make_family("pendulum-dynamics").control_defaults["wrap"] == [0]
    # support trajectories start where episodes start (rest_fraction 1) or anywhere in the region (0)
    for share, inside in ((1.0, 200), (0.0, 0)):
        b = make_family("pendulum-dynamics", rest_fraction=share).sample_batch(np.random.default_rng(2), 200, 4, 1)
        starts = b.x_support[:, 0, :2]
        assert abs(int((np.abs(starts) <= 0.3).all(1).sum()) - inside) <= 2  # ~0.1% of region draws land there


def _unit_transitions(n: int, seed: int):
    """``n`` consecutive transitions of one new pendulum unit under smoothed random actions from a state of the
    operating region, and 200 query ones."""
    fam = make_family("pendulum-dynamics", rest_fraction=0.0)
    b = fam.sample_batch(np.random.default_rng(seed), 1, n, 200)
    return b.x_support[0], b.y_support[0], b.x_query[0], b.y_query[0]


def test_controller_readapts_on_schedule_and_its_model_beats_theta0(dynamics_bundle):
    model = Model.load(dynamics_bundle)
    xs, ys, xq, yq = _unit_transitions(23, seed=5)
    ctl, meta = Controller(model, "adapted"), Controller(model, "meta")
    done, thetas = [], {}
    for i, (x, y) in enumerate(zip(xs, ys)):
        s, a = x[:2], x[2:]
        nxt = s + y
        done.append(ctl.observe(s, a, nxt))
        thetas[i + 1] = ctl.adapted.theta
        assert not meta.observe(s, a, nxt)
    # K = 2, M = 10: after observations 2, 4, ..., 22, from the last min(observations, 10) transitions
    assert [i + 1 for i, d in enumerate(done) if d] == list(range(2, 23, 2)) and ctl.adaptations == 11
    wx, wy = ctl.window
    assert np.allclose(wx, xs[-10:]) and np.allclose(wy, ys[-10:], atol=1e-6)  # the last 10 (22 and 23 too)
    for n, first in ((2, 0), (6, 0), (22, 12)):  # the float32 deltas of the window, not ys exactly: allclose
        assert np.allclose(thetas[n], model.adapt(xs[first:n], ys[first:n]).theta, atol=1e-4)
    assert np.array_equal(thetas[23], thetas[22]) and np.array_equal(thetas[1], model.theta0)
    assert not np.allclose(thetas[22], model.adapt(xs[11:21], ys[11:21]).theta, atol=1e-3)
    assert np.array_equal(meta.adapted.theta, model.theta0)
    rmse = lambda c: float(np.sqrt(np.mean((c.dynamics(xq) - yq) ** 2)))  # noqa: E731
    assert rmse(ctl) < 0.6 * rmse(meta)  # 0.045 against 0.091 rad(/s) over the region, from 10 transitions
    ctl.reset()
    assert ctl.adaptations == 0 and ctl.window[0].shape == (0, 3) and np.array_equal(ctl.adapted.theta, model.theta0)


def test_controller_refuses_bad_states_and_actions(dynamics_bundle):
    ctl = Controller(Model.load(dynamics_bundle))
    with pytest.raises(InputError, match="state must hold 2 finite numbers"):
        ctl.act(np.array([0.0, np.nan]))
    with pytest.raises(InputError, match="state must hold 2"):
        ctl.act(np.zeros(3))
    with pytest.raises(InputError, match="action must hold 1"):
        ctl.observe(np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(InputError, match="mode must be one of adapted, meta"):
        Controller(ctl.model, "oracle")


def test_closed_loop_adapted_controller_beats_the_meta_model(dynamics_bundle):
    model = Model.load(dynamics_bundle)
    policies = {k: v for k, v in default_policies().items() if k in ("adapted", "meta")}
    report = evaluate_control(model, episodes=4, steps=80, seed=3, policies=policies)
    adapted, meta = report.summary("adapted"), report.summary("meta")
    assert adapted.mean > meta.mean + 0.1 * abs(meta.mean)
    # same units and noise for both: the returns are deterministic per seed
    again = evaluate_control(model, episodes=1, steps=80, seed=3, policies=policies)
    assert again.summary("meta").returns[0] == meta.returns[0]
    assert report.explore == 10  # the bundle's window M by default


def test_commissioning_run_adapts_before_the_episode_and_leaves_the_meta_model_alone(dynamics_bundle):
    model = Model.load(dynamics_bundle)
    made: list[Controller] = []

    def adapted(model, spec, system, params):
        made.append(Controller(model, "adapted"))
        return made[-1]

    policies = {"adapted": adapted, "meta": default_policies()["meta"]}
    warm = evaluate_control(model, episodes=2, steps=2, seed=5, policies=policies, explore=6)
    # K = 2: three re-adaptations from the 6 commissioning transitions, one more after the episode's two steps
    assert [c.adaptations for c in made] == [4, 4] and [c.steps for c in made] == [8, 8]
    cold = evaluate_control(model, episodes=2, steps=2, seed=5, policies=policies, explore=0)
    assert made[-1].adaptations == 1 and cold.explore == 0
    # the meta-model ignores what it observes, and the episode's units, starts and noise do not depend on explore
    assert cold.summary("meta").returns == warm.summary("meta").returns
    assert cold.summary("adapted").returns != warm.summary("adapted").returns
    with pytest.raises(InputError, match="--explore must be 0 or more"):
        evaluate_control(model, episodes=1, steps=1, policies=policies, explore=-1)


def test_cli_control_json_and_plot(dynamics_bundle, tmp_path):
    png = tmp_path / "traj.png"
    res = CliRunner().invoke(main, ["control", str(dynamics_bundle), "--episodes", "2", "--steps", "15", "--json",
                                    "--plot", str(png)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["controllers"]) == set(CONTROLLERS) and out["episodes"] == 2 and out["steps"] == 15
    assert {"mean_return", "ci95", "held", "returns"} <= set(out["controllers"]["adapted"])
    c = {k: v["mean_return"] for k, v in out["controllers"].items()}
    assert out["gap_closed"] == pytest.approx((c["adapted"] - c["meta"]) / (c["oracle"] - c["meta"]))
    assert out["window"] == 10 and out["adapt_every"] == 2 and out["dt"] == 0.05 and out["explore"] == 10
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_control_errors(dynamics_bundle, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(dynamics_bundle, plain)
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["control"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    runner = CliRunner()
    res = runner.invoke(main, ["control", str(plain), "--no-progress"])
    assert res.exit_code == 1 and "has no control part" in res.output and "metaedge train --config" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(main, ["control", str(dynamics_bundle), "--episodes", "0"])
    assert res.exit_code == 1 and "--episodes must be at least 1" in res.output
    res = runner.invoke(main, ["control", str(dynamics_bundle), "--plot", str(tmp_path / "x.svg")])
    assert res.exit_code == 2 and "must end in .png" in res.output
    res = runner.invoke(main, ["control", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    with pytest.raises(InputError, match="has no control part"):
        Controller(Model.load(plain))


def test_controller_runs_with_torch_onnx_and_sdk_unimportable(dynamics_bundle):
    result = run_without(f"""
        import numpy as np
        from metaedge.runtime.control import Controller
        from metaedge.runtime.model import Model
        ctl = Controller(Model.load({str(dynamics_bundle)!r}, backend="native"))
        s = np.array([0.1, 0.0])
        for _ in range(4):
            a = ctl.act(s)
            nxt = s + np.array([0.0, 0.1])
            ctl.observe(s, a, nxt)
            s = nxt
        print("adaptations", ctl.adaptations)
        assert not any(k.split(".")[0] in ("torch", "onnx") for k in sys.modules), "torch or onnx got imported"
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "adaptations 2" in result.stdout


def test_gap_closed_bootstrap_ci_is_paired_over_units():
    from metaedge.control_cli import ControlReport, Summary
    from metaedge.runtime.manifest import Control

    spec = Control(state_dim=2, action_dim=1, action_low=(-1.0,), action_high=(1.0,), planner="random-shooting",
                   horizon=2, candidates=4, q=(1.0, 1.0), r=(0.0,), target=(0.0, 0.0), window=4, adapt_every=2,
                   dt=0.1)
    rng = np.random.default_rng(0)

    def report(meta, oracle, adapted):
        rows = {"adapted": adapted, "meta": meta, "oracle": oracle}
        return ControlReport("f", len(meta), 10, 0, spec, 0,
                             tuple(Summary(k, float(np.mean(v)), 0.0, 0, tuple(v)) for k, v in rows.items()), {})

    # units differ a lot, but adaptation closes exactly half of every unit's gap: pairing keeps the CI at 0.5
    meta = rng.normal(-100, 30, 40)
    oracle = meta + rng.uniform(5, 15, 40)
    exact = report(meta, oracle, meta + 0.5 * (oracle - meta))
    lo, hi = exact.gap_closed_ci()
    assert exact.gap_closed() == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    # noise on the adapted returns widens it around the point estimate
    noisy = report(meta, oracle, meta + 0.5 * (oracle - meta) + rng.normal(0, 5, 40))
    lo, hi = noisy.gap_closed_ci()
    assert lo < noisy.gap_closed() < hi and hi - lo > 0.2
    assert "95% paired bootstrap CI over units" in noisy.table()
    assert noisy.to_dict()["gap_closed_ci95"] == [pytest.approx(lo), pytest.approx(hi)]
    assert np.isnan(report(meta, meta, meta).gap_closed_ci()[0])  # no gap: undefined

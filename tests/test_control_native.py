"""The C library's planner and device loop (``me_plan`` / ``me_observe``, model.mebin format 5) against the Python
runtime: runtime/control.py's Planner over the ONNX Runtime backend's adapted predictions, and Model.adapt on the
same window of transitions.

Until the dynamics families land, a minimal pendulum family (``sdk.tasks.systems.Pendulum`` units, support =
transitions ``(state, action) -> state change``) is defined here with its ``control_defaults``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from toolchains import need

from metaedge.runtime import native
from metaedge.runtime.control import Planner, wrap_angle
from metaedge.runtime.model import Adapted, Model
from metaedge.sdk.tasks.base import Task, TaskFamily, register_family
from metaedge.sdk.tasks.systems import Pendulum

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C library unavailable: {native.unavailable_reason()}")

FAMILY = "test-native-pendulum"
STEPS = 30


class PendulumTransitions(TaskFamily):
    """One pendulum unit per task: transitions from states all around the circle under random commands."""

    name = FAMILY
    input_shape = (3,)
    output_dim = 2
    input_names = ("theta", "omega", "command")
    output_names = ("d_theta", "d_omega")
    input_units = ("rad", "rad/s", "")
    output_units = ("rad", "rad/s")
    control_defaults = dict(state_dim=2, action_dim=1, action_low=[-1.0], action_high=[1.0],
                            planner="random-shooting", horizon=8, candidates=48, q=[1.0, 0.1], r=[0.01],
                            target=[float(np.pi), 0.0], window=16, adapt_every=4, dt=0.05, seed=3, wrap=[0])

    def __init__(self) -> None:
        self.system = Pendulum()

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: str = "train") -> Task:
        n = shots + queries
        params = np.repeat(self.system.sample_params(rng, 1), n, axis=0)
        state = np.stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(-3.0, 3.0, n)], axis=1)
        action = rng.uniform(-1.0, 1.0, (n, 1))
        x = np.concatenate([state, action], axis=1).astype(np.float32)
        y = self.system.delta(params, state, action, rng).astype(np.float32)
        return Task(x[:shots], y[:shots], x[shots:], y[shots:], {"params": params[0].tolist()})


register_family(FAMILY, PendulumTransitions)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """``{"ridge": bundle with random shooting, "metasgd": bundle with CEM}``, trained a few dozen iterations."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    root = tmp_path_factory.mktemp("control-native")
    common = dict(family=FAMILY, queries=16, meta_batch=4, iterations=30, hidden=[16, 16], activation="tanh")
    # ridge: a full window at every re-adaptation, since a two-output ridge bundle's gauss_newton.onnx takes
    # exactly `shots` samples (its support axis is not dynamic; the C library takes any count)
    configs = {"ridge": TrainConfig(algo="ridge", shots=8, inner_steps=1, control={"window": 8, "adapt_every": 8},
                                    **common),
               "metasgd": TrainConfig(algo="metasgd", shots=16, inner_steps=2,
                                      control={"planner": "cem", "iterations": 3, "elites": 6}, **common)}
    return {name: export_bundle(train(cfg, root / f"{name}-run", progress=False), root / name, check=False)
            for name, cfg in configs.items()}


def _transition(state: np.ndarray, action: np.ndarray, next_state: np.ndarray, wrap: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """A window row as me_observe forms it: input concat(state, action), target the float32 state change with
    the angle dims wrapped."""
    change = next_state - state
    change[list(wrap)] = wrap_angle(change[list(wrap)])
    return np.concatenate([state, action]), change


@pytest.mark.parametrize("name", ["ridge", "metasgd"])
def test_c_controller_matches_the_python_runtime_in_closed_loop(bundles, name):
    bundle = bundles[name]
    model = Model.load(bundle, backend="onnxruntime")
    spec = model.bundle.manifest.control
    session = native.NativeSession((bundle / "model.mebin").read_bytes())
    assert session.header.format_version == 5 and session.header.out_dim == 2
    assert session.control.planner == spec.planner == ("random-shooting" if name == "ridge" else "cem")
    planner, system, rng = Planner(spec), Pendulum(), np.random.default_rng(11)
    unit = system.sample_params(rng, 1)
    state = np.array([0.2, 0.0])
    adapted = Adapted(model, model.theta0)
    xs, ys = [], []
    action_gap = cost_gap = theta_gap = 0.0
    adaptations = 0
    for _ in range(STEPS):
        s = state.astype(np.float32)
        py = planner.plan(s, adapted.predict)
        action, sequence, cost = session.plan(s)
        action_gap = max(action_gap, float(np.abs(action - py.action).max()),
                         float(np.abs(sequence - py.sequence).max()))
        cost_gap = max(cost_gap, abs(cost - py.cost) / max(abs(py.cost), 1e-12))
        state = system.step(unit, state[None], py.action[None], rng)[0]
        nxt = state.astype(np.float32)
        x, y = _transition(s, py.action, nxt, spec.wrap)
        xs, ys = (xs + [x])[-spec.window:], (ys + [y])[-spec.window:]
        if session.observe(s, py.action, nxt):
            adapted = model.adapt(np.stack(xs), np.stack(ys))
            theta_gap = max(theta_gap, float(np.abs(session.theta - adapted.theta).max()))
            adaptations += 1
    assert adaptations == STEPS // spec.adapt_every and len(xs) == spec.window  # the window wrapped around
    assert not np.allclose(adapted.theta, model.theta0)
    assert action_gap < 1e-4, f"C and Python plans differ by {action_gap:.3g}"
    assert cost_gap < 1e-4, f"C and Python plan costs differ by {cost_gap:.3g} (relative)"
    assert theta_gap < 1e-5, f"me_observe's re-adaptation differs from Model.adapt by {theta_gap:.3g}"


@pytest.mark.parametrize("name", ["ridge", "metasgd"])
def test_c_planner_is_the_python_planner_over_the_c_network(bundles, name):
    """With the C session's own network as the Python planner's dynamics, only the planner's arithmetic can
    differ: the random stream, the clipping, the wrap, the elite refit and the costs agree to float rounding."""
    data = (bundles[name] / "model.mebin").read_bytes()
    session = native.NativeSession(data, max_shots=5)  # candidates rolled out 16 at a time (raised to the window)
    net = native.NativeModel(data)
    planner = Planner(Model.load(bundles[name], backend="native").bundle.manifest.control)
    state = np.array([3.0, -1.0], np.float32)
    for _ in range(12):
        py = planner.plan(state, lambda x: net.predict(session.theta, x))
        action, sequence, cost = session.plan(state)
        np.testing.assert_allclose(sequence, py.sequence, rtol=0, atol=1e-6)
        assert cost == pytest.approx(py.cost, rel=1e-9)
        state = (state + net.predict(session.theta, np.concatenate([state, action])[None])[0]).astype(np.float32)
        state[0] = wrap_angle(state[:1])[0]
    session.reset_plan()
    planner.reset()
    again = session.plan(state)[0]
    assert again == pytest.approx(planner.plan(state, lambda x: net.predict(session.theta, x)).action, abs=1e-6)


def test_control_section_states_the_manifest_control_part(bundles):
    manifest = Model.load(bundles["metasgd"], backend="onnxruntime").bundle.manifest
    c = native.NativeSession((bundles["metasgd"] / "model.mebin").read_bytes()).control
    m = manifest.control
    assert (c.state_dim, c.action_dim, c.planner, c.horizon, c.candidates, c.iterations, c.elites, c.window,
            c.adapt_every, c.n_wrap, c.seed) == (m.state_dim, m.action_dim, m.planner, m.horizon, m.candidates,
                                                 m.iterations, m.elites, m.window, m.adapt_every, len(m.wrap), m.seed)
    assert c.dt == np.float32(m.dt)
    # the footprint's arena holds the planner and the window: more than the same network without them needs
    from metaedge.export.firmware import firmware_bytes
    from metaedge.sdk.run import Run

    plain = firmware_bytes(Run.load(bundles["metasgd"].parent / "metasgd-run"))
    fp = manifest.footprint.native
    assert native.Header.read(plain).format_version == 1
    assert fp.arena_bytes == native.NativeSession((bundles["metasgd"] / "model.mebin").read_bytes(),
                                                  max_shots=fp.max_shots).arena_bytes
    assert fp.arena_bytes > native.NativeModel(plain, max_shots=fp.max_shots).arena_bytes(fp.max_shots)


def test_native_session_refusals(bundles, sinusoid_bundle):
    with pytest.raises(native.NativeError) as err:
        native.NativeSession((sinusoid_bundle / "model.mebin").read_bytes())
    assert err.value.status == "unsupported"
    session = native.NativeSession((bundles["ridge"] / "model.mebin").read_bytes())
    with pytest.raises(native.NativeError) as err:
        session.plan(np.array([np.nan, 0.0]))
    assert err.value.status == "nonfinite"
    with pytest.raises(native.InputError, match="state must hold 2 value"):
        session.plan(np.zeros(3))
    theta = session.theta
    with pytest.raises(native.NativeError) as err:
        session.observe(np.zeros(2), np.array([np.inf]), np.zeros(2))
    assert err.value.status == "nonfinite" and np.array_equal(session.theta, theta)


def _build(preset: str) -> Path:
    """The preset's build folder, configured and built (incremental: test_native.py builds the same folders)."""
    root = Path(__file__).resolve().parent.parent
    for args in (["--preset", preset], ["--build", "--preset", preset, "-j2"]):
        out = subprocess.run(["cmake", *args], cwd=root, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root / "build" / preset


def test_cortex_m4_control_example_plans_the_host_actions():
    """examples/firmware/control_example.c (me_plan, me_observe with re-adaptation, the format-5 seed model) prints
    the same actions and states on the Cortex-M4 board model (hard-float, newlib's libm) as on the host."""
    need("host")
    need("cortex-m4")
    host = subprocess.run([_build("host-release") / "examples/firmware/control_example"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    elf = _build("cortex-m4") / "examples/firmware/control_example.elf"
    out = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config",
                          "enable=on,target=native", "-kernel", str(elf)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert host.count("(re-adapted)") == 3 and "last re-adaptation" in host
    assert out.stdout.replace("\r", "") == host

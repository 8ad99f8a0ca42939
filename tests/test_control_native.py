"""The C library's planner and device loop (``me_plan`` / ``me_observe``, model.mebin format 5) against the Python
runtime's :class:`~metaedge.runtime.control.Controller` over the ONNX Runtime backend: the same actions, plans and
re-adaptations in closed loop on a ``pendulum-dynamics`` unit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from toolchains import need

from metaedge.runtime import native
from metaedge.runtime.control import Controller, Planner, wrap_angle
from metaedge.runtime.model import Model
from metaedge.sdk.tasks.systems import Pendulum

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C library unavailable: {native.unavailable_reason()}")

STEPS = 30


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """``{"ridge": bundle with random shooting, "metasgd": bundle with CEM}`` of the pendulum-dynamics family,
    trained a few dozen iterations."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    root = tmp_path_factory.mktemp("control-native")
    common = dict(family="pendulum-dynamics", queries=16, meta_batch=4, iterations=30, hidden=[16, 16],
                  activation="tanh")
    small = {"horizon": 8, "candidates": 48, "window": 16, "adapt_every": 4, "seed": 3}
    configs = {"ridge": TrainConfig(algo="ridge", shots=16, inner_steps=1,
                                    control={**small, "planner": "random-shooting"}, **common),
               "metasgd": TrainConfig(algo="metasgd", shots=16, inner_steps=2,
                                      control={**small, "planner": "cem", "iterations": 3, "elites": 6}, **common)}
    return {name: export_bundle(train(cfg, root / f"{name}-run", progress=False), root / name, check=False)
            for name, cfg in configs.items()}


@pytest.mark.parametrize("name", ["ridge", "metasgd"])
def test_c_controller_matches_the_python_runtime_in_closed_loop(bundles, name):
    bundle = bundles[name]
    model = Model.load(bundle, backend="onnxruntime")
    ctl = Controller(model)
    spec = ctl.spec
    session = native.NativeSession((bundle / "model.mebin").read_bytes())
    assert session.header.format_version == 5 and session.header.out_dim == 2
    assert session.control.planner == spec.planner == ("random-shooting" if name == "ridge" else "cem")
    system, rng = Pendulum(), np.random.default_rng(11)
    unit = system.sample_params(rng, 1)
    state = np.array([0.2, 0.0])
    action_gap = cost_gap = theta_gap = 0.0
    for _ in range(STEPS):
        s = state.astype(np.float32)
        py = ctl.planner.plan(s, ctl.dynamics)  # what ctl.act(s) returns the action of
        action, sequence, cost = session.plan(s)
        action_gap = max(action_gap, float(np.abs(action - py.action).max()),
                         float(np.abs(sequence - py.sequence).max()))
        cost_gap = max(cost_gap, abs(cost - py.cost) / max(abs(py.cost), 1e-12))
        state = system.step(unit, state[None], py.action[None], rng)[0]
        nxt = state.astype(np.float32)
        c_adapted = session.observe(s, py.action, nxt)
        assert ctl.observe(s, py.action, nxt) == c_adapted
        if c_adapted:
            theta_gap = max(theta_gap, float(np.abs(session.theta - ctl.adapted.theta).max()))
    assert ctl.adaptations == STEPS // spec.adapt_every and len(ctl.window[0]) == spec.window  # window wrapped
    assert not np.allclose(ctl.adapted.theta, model.theta0)
    assert action_gap < 1e-4, f"C and Python plans differ by {action_gap:.3g}"
    assert cost_gap < 1e-4, f"C and Python plan costs differ by {cost_gap:.3g} (relative)"
    assert theta_gap < 1e-5, f"me_observe's re-adaptation differs from the Controller's by {theta_gap:.3g}"


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

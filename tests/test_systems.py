"""The simulated plants (sdk/tasks/systems.py) against closed-form physics."""

from __future__ import annotations

import numpy as np

from metaedge.sdk.tasks.systems import DCMotor, Pendulum, wrap


def test_pendulum_small_swings_follow_the_linearised_period():
    sys = Pendulum()
    params = np.array([[1.0, 0.8, 1e-9, 3.0]])  # friction ~0: a free pendulum
    state = np.array([[0.05, 0.0]])
    thetas = []
    for _ in range(200):  # 10 s
        state = sys.step(params, state, np.zeros((1, 1)))
        thetas.append(state[0, 0])
    crossings = np.where(np.diff(np.sign(thetas)) > 0)[0]
    period = np.mean(np.diff(crossings)) * sys.dt
    assert abs(period - 2 * np.pi * np.sqrt(0.8 / 9.81)) < 0.03


def test_pendulum_holds_where_motor_torque_balances_gravity():
    sys = Pendulum()
    m, length, k = 1.0, 0.6, 4.0
    theta = np.arcsin(k * 0.5 / (m * 9.81 * length))
    d = sys.derivative(np.array([[m, length, 0.1, k]]), np.array([[theta, 0.0]]), np.array([[0.5]]))
    assert np.allclose(d, 0, atol=1e-12)


def test_dc_motor_reaches_its_steady_speed():
    sys = DCMotor()
    inertia, viscous, kt, resistance, volts = 5e-4, 2e-4, 0.04, 2.0, 3.0
    params = np.array([[inertia, viscous, 0.0, kt, resistance]])
    state = np.zeros((1, 2))
    for _ in range(500):  # 5 s, many mechanical time constants
        state = sys.step(params, state, np.array([[volts]]))
    assert np.isclose(state[0, 1], kt * volts / (kt**2 + viscous * resistance), rtol=1e-4)


def test_steps_clip_actions_wrap_angles_and_add_noise_only_with_a_generator():
    sys = Pendulum()
    params = sys.sample_params(np.random.default_rng(0), 4)
    state = np.array([[3.1, 2.0]] * 4)
    a = sys.step(params, state, np.full((4, 1), 5.0))
    assert np.array_equal(a, sys.step(params, state, np.ones((4, 1))))
    assert np.all(a[:, 0] >= -np.pi) and np.all(a[:, 0] < np.pi) and np.all(a[:, 0] < 0)  # went over the top
    d = sys.delta(params, state, np.ones((4, 1)))
    assert np.allclose(wrap(state + d), a) and np.all(np.abs(d[:, 0]) < 0.5)
    noisy = sys.step(params, state, np.ones((4, 1)), np.random.default_rng(1))
    assert 0 < np.abs(noisy - a).max() < 0.1


def test_parameter_draws_respect_their_ranges():
    for sys in (Pendulum(), DCMotor()):
        p = sys.sample_params(np.random.default_rng(2), 1000)
        for j, r in enumerate(sys.parameters):
            assert r.low <= p[:, j].min() and p[:, j].max() <= r.high

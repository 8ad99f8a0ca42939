"""The torch-free MPC planner (runtime/control.py) and the manifest's control part."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from metaedge.runtime.control import Planner, normals, rollout_costs, splitmix64, uniforms, wrap_angle
from metaedge.runtime.errors import ManifestError
from metaedge.runtime.manifest import Control

DT = 0.1


def _spec(**kw) -> Control:
    base = dict(state_dim=2, action_dim=1, action_low=(-2.0,), action_high=(2.0,), planner="random-shooting",
                horizon=10, candidates=200, q=(1.0, 0.1), r=(0.01,), target=(0.0, 0.0), window=20, adapt_every=5,
                dt=DT, seed=7)
    return Control(**{**base, **kw})


def _double_integrator(x: np.ndarray) -> np.ndarray:
    """State (position, velocity), action force: the exact one-step change, ``(N, 3) -> (N, 2)``."""
    v, a = x[:, 1], x[:, 2]
    return np.stack([v * DT + 0.5 * a * DT**2, a * DT], axis=1).astype(np.float32)


def test_splitmix64_matches_the_reference_outputs():
    # the first outputs of Vigna's splitmix64.c from state 0, and from state 1234567
    assert [int(v) for v in splitmix64(0, np.arange(3))] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
                                                               0x06C45D188009454F]
    assert int(splitmix64(1234567, np.array([0]))[0]) == 0x599ED017FB08FC85


def test_uniforms_and_normals_are_what_they_claim():
    u = uniforms(3, 0, 200_000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert np.array_equal(u[1000:1010], uniforms(3, 1000, 10))  # counter-based: any slice alone
    g = normals(3, 0, 100_000)
    assert abs(g.mean()) < 0.02 and abs(g.std() - 1) < 0.02
    assert abs(np.mean(np.abs(g) < 1.96) - 0.95) < 0.005


def test_wrap_angle_maps_to_half_open_interval():
    e = np.array([np.pi, -np.pi, 3 * np.pi + 0.5, -0.25, 7.0], dtype=np.float32)
    w = wrap_angle(e)
    assert np.all(w >= -np.pi) and np.all(w < np.pi)
    assert np.allclose(np.cos(w), np.cos(e), atol=1e-5) and np.allclose(np.sin(w), np.sin(e), atol=1e-5)


def test_rollout_costs_against_a_hand_computed_sequence():
    spec = _spec(horizon=2)
    actions = np.array([[[1.0], [-1.0]]], dtype=np.float32)
    s1 = np.array([1.0 + 0.5 * DT * DT * 1.0 + 0.0, 0.1])  # from (1, 0) with a = 1
    s2 = np.array([s1[0] + s1[1] * DT - 0.5 * DT * DT, s1[1] - DT])
    want = sum(e[0] ** 2 + 0.1 * e[1] ** 2 + 0.01 for e in (s1, s2))
    got = rollout_costs(spec, np.array([1.0, 0.0]), actions, _double_integrator)
    assert got.shape == (1,) and got[0] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("planner", ["random-shooting", "cem"])
def test_closed_loop_planning_brings_the_state_to_the_target(planner):
    spec = _spec(planner=planner, iterations=4, elites=20) if planner == "cem" else _spec()
    p = Planner(spec)
    s = np.array([1.0, 0.0], dtype=np.float32)
    late = []
    for t in range(60):
        plan = p.plan(s, _double_integrator)
        assert plan.sequence.shape == (10, 1) and -2 <= plan.action[0] <= 2
        s = s + _double_integrator(np.concatenate([s, plan.action])[None])[0]
        if t >= 40:
            late.append(np.abs(s))
    late = np.max(late, axis=0)
    assert late[0] < 0.1 and late[1] < 0.3  # unforced it would stay at position 1


def test_cem_finds_cheaper_plans_than_random_shooting_with_the_same_rollouts():
    state = np.array([1.0, -0.5])
    rs = Planner(_spec(candidates=400)).plan(state, _double_integrator)
    cem = Planner(_spec(planner="cem", candidates=100, iterations=4, elites=10)).plan(state, _double_integrator)
    assert cem.cost < rs.cost


def test_plans_are_deterministic_per_seed_and_call():
    spec = _spec(planner="cem", iterations=3, elites=10)
    a, b = Planner(spec), Planner(spec)
    s = np.array([0.5, 0.2])
    first = [a.plan(s, _double_integrator).action[0] for _ in range(3)]
    assert first == [b.plan(s, _double_integrator).action[0] for _ in range(3)]
    assert len(set(first)) == 3  # each call draws new numbers (and warm-starts)
    b.reset()
    assert b.plan(s, _double_integrator).action[0] == first[0]
    other = Planner(dataclasses.replace(spec, seed=8)).plan(s, _double_integrator).action[0]
    assert other != first[0]


def test_control_part_round_trips_and_names_bad_fields():
    spec = _spec(planner="cem", iterations=3, elites=10, wrap=(0,))
    data = json.loads(json.dumps(spec._write()))
    assert Control._read(data, "control") == spec
    for key, value, word in (("q", [1.0], "control.q"), ("elites", 0, "control.elites"),
                             ("action_high", [-3.0], "control.action_high"), ("wrap", [5], "control.wrap")):
        with pytest.raises(ManifestError, match=word.replace(".", r"\.")):
            Control._read({**data, key: value}, "control")

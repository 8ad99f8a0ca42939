"""The optional HalfCheetah velocity family (sdk/rl/cheetah.py) against gymnasium's own HalfCheetah-v5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaedge.errors import InputError
from metaedge.sdk.rl.envs import make_env
from tests.isolation import run_without

gym = pytest.importorskip("gymnasium", reason="gymnasium[mujoco] is not installed (pip install -e '.[mujoco]')")
pytest.importorskip("mujoco", reason="mujoco is not installed (pip install -e '.[mujoco]')")


@pytest.fixture(scope="module")
def env():
    return make_env("half-cheetah-vel")


def test_step_matches_gymnasium_half_cheetah(env):
    from metaedge.sdk.rl.cheetah import mujoco_warnings_logged

    with mujoco_warnings_logged():
        reference = gym.make("HalfCheetah-v5").unwrapped
    rng = np.random.default_rng(0)
    tasks = env.sample_tasks(rng, 2)
    state = env.reset(tasks, 3, rng)
    actions = rng.uniform(-1.2, 1.2, (2, 3, 6))  # beyond the bounds on purpose: both clip to [-1, 1]
    nxt, reward = env.step(tasks, state, actions)
    assert nxt.shape == (2, 3, 18) and reward.shape == (2, 3)
    for t in range(2):
        for e in range(3):
            reference.reset(seed=0)
            reference.set_state(state[t, e, :9], state[t, e, 9:])
            obs, _, _, _, info = reference.step(np.clip(actions[t, e], -1, 1))
            np.testing.assert_allclose(env.observe(nxt[t, e]), obs, atol=1e-8)
            cost = 0.05 * float((np.clip(actions[t, e], -1, 1) ** 2).sum())
            assert reward[t, e] == pytest.approx(-abs(info["x_velocity"] - tasks[t, 0]) - cost, abs=1e-8)


def test_step_depends_on_the_state_alone(env):
    rng = np.random.default_rng(1)
    tasks = env.sample_tasks(rng, 1)
    state = env.reset(tasks, 2, rng)
    a = rng.uniform(-1, 1, (1, 2, 6))
    first, r1 = env.step(tasks, state, a)
    env.step(tasks, env.reset(tasks, 2, rng), rng.uniform(-1, 1, (1, 2, 6)))  # something else in between
    again, r2 = env.step(tasks, state, a)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(r1, r2)
    assert 0 <= tasks.min() and tasks.max() <= 2 and env.observe(state).shape == (1, 2, 17)


def test_rollout_and_inner_step_run_on_the_cheetah(env):
    from metaedge.sdk.rl.advantages import advantages
    from metaedge.sdk.rl.policy import GaussianPolicy
    from metaedge.sdk.rl.rollout import rollout

    policy = GaussianPolicy(env.obs_dim, env.action_dim, (8,), 0.0)
    theta = policy.init(torch.Generator().manual_seed(0))
    env.horizon = 5  # a short episode: the shapes and the returns' sign are what is checked here
    try:
        rng = np.random.default_rng(2)
        tasks = env.sample_tasks(rng, 2)
        eps = rollout(env, policy, theta.expand(2, -1), tasks, 2, rng)
        _, adv = advantages(eps.obs, eps.rewards, env.discount)
    finally:
        del env.horizon
    assert eps.rewards.shape == (2, 2, 5) and adv.shape == (2, 2, 5)
    assert float(eps.rewards.max()) <= 0  # minus a speed error minus a control cost


def test_without_gymnasium_the_family_refuses_with_what_to_do():
    result = run_without("""
        from metaedge.errors import InputError
        from metaedge.sdk.rl.envs import make_env
        try:
            make_env("half-cheetah-vel")
        except InputError as e:
            print("refused:", e)
    """, blocked=("gymnasium",))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: the half-cheetah-vel family needs gymnasium[mujoco]" in result.stdout


def test_unknown_family_still_refused():
    with pytest.raises(InputError, match="half-cheetah-vel"):
        make_env("cheetah")

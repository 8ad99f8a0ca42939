"""Meta-RL: the task families against hand computations, the policy's density, advantages (torch == numpy == C),
the vmapped meta-gradient and TRPO step against a per-task loop, and the exported policy graphs against PyTorch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from isolation import run_without

from metaedge.errors import InputError
from metaedge.runtime import native
from metaedge.runtime.errors import BundleError, ManifestError
from metaedge.runtime.policy import PolicyBundle, PolicyRecord, PolicyRuntime
from metaedge.runtime.policy import advantages as np_advantages
from metaedge.sdk.rl.advantages import advantages as torch_advantages
from metaedge.sdk.rl.envs import PendulumSwingUp, PointNavigation, make_env
from metaedge.sdk.rl.loop import loop_meta_gradient, loop_trpo_step
from metaedge.sdk.rl.maml import MetaBatch, adapt_all, inner_step, meta_gradient, trpo_step
from metaedge.sdk.rl.policy import GaussianPolicy
from metaedge.sdk.rl.rollout import rollout
from metaedge.sdk.rl.train import RLConfig, RLRun, save_run
from metaedge.sdk.tasks.systems import Pendulum, wrap

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- families --------------------------------------------------------------------------------------------------------

def test_point_navigation_step_by_hand():
    env = PointNavigation()
    goals = np.array([[0.3, -0.2], [-0.5, 0.5]])
    state = np.zeros((2, 1, 2))
    action = np.array([[[0.3, -0.05]], [[-0.02, 0.2]]])  # clipped to [-0.1, 0.1] per axis
    nxt, reward = env.step(goals, state, action)
    np.testing.assert_allclose(nxt[:, 0], [[0.1, -0.05], [-0.02, 0.1]])
    np.testing.assert_allclose(reward[:, 0], [-math.hypot(0.1 - 0.3, -0.05 + 0.2), -math.hypot(-0.02 + 0.5, 0.1 - 0.5)])
    tasks = env.sample_tasks(np.random.default_rng(0), 1000)
    assert tasks.min() >= -0.5 and tasks.max() <= 0.5 and tasks.min() < -0.45 and tasks.max() > 0.45
    assert env.reset(tasks[:3], 4, np.random.default_rng(0)).shape == (3, 4, 2)
    assert not env.reset(tasks[:3], 4, np.random.default_rng(0)).any()  # every episode starts at the origin


def test_pendulum_family_uses_the_shared_simulator_and_the_stated_cost():
    env = PendulumSwingUp()
    rng = np.random.default_rng(1)
    tasks = env.sample_tasks(rng, 3)
    state = env.reset(tasks, 2, rng)
    action = np.array([[[0.5], [2.0]], [[-1.0], [0.0]], [[0.3], [-3.0]]])
    nxt, reward = env.step(tasks, state, action)
    for i in range(3):  # the physics is Pendulum's, one unit at a time
        want = Pendulum().step(np.repeat(tasks[i:i + 1], 2, 0), state[i], np.clip(action[i], -1, 1))
        np.testing.assert_allclose(nxt[i], want)
    u = np.clip(action[..., 0], -1, 1)
    cost = wrap(nxt[..., 0] - np.pi) ** 2 + 0.1 * nxt[..., 1] ** 2 + 0.01 * u**2
    np.testing.assert_allclose(reward, -cost)
    # upright at rest with no torque is an equilibrium: zero cost
    up = np.tile([[[np.pi - 1e-9, 0.0]]], (3, 1, 1))
    _, r = env.step(tasks, up, np.zeros((3, 1, 1)))
    assert np.abs(r).max() < 1e-12
    obs = env.observe(np.array([[[np.pi / 2, 0.7]]]))
    np.testing.assert_allclose(obs, [[[0.0, 1.0, 0.7]]], atol=1e-12)
    with pytest.raises(InputError, match="unknown RL family"):
        make_env("cheetah")


# --- policy ----------------------------------------------------------------------------------------------------------

def test_policy_density_and_kl_match_torch_distributions():
    policy = GaussianPolicy(3, 2, (8, 8))
    gen = torch.Generator().manual_seed(0)
    theta, other = policy.init(gen), policy.init(gen) + 0.1
    obs, act = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)
    std = torch.exp(policy.unflatten(theta)["log_std"])
    want = torch.distributions.Normal(policy.mean(theta, obs), std).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(theta, obs, act), want)
    d0 = torch.distributions.Normal(policy.mean(theta, obs), std)
    d1 = torch.distributions.Normal(policy.mean(other, obs), torch.exp(policy.unflatten(other)["log_std"]))
    torch.testing.assert_close(policy.kl(theta, other, obs), torch.distributions.kl_divergence(d0, d1).sum(-1).mean())
    # batched parameters give each row its own policy
    thetas = torch.stack([theta, other])
    torch.testing.assert_close(policy.mean(thetas, obs.expand(2, 5, 3))[1], policy.mean(other, obs))


# --- advantages ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def episodes():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 6, 30, 3)).astype(np.float32) * 3
    rewards = rng.normal(size=(4, 6, 30)).astype(np.float32) - 5
    return obs, rewards


def test_returns_by_hand():
    ret, _ = np_advantages(np.zeros((1, 3, 1)), np.array([[1.0, 2.0, 3.0]]), 0.5)
    np.testing.assert_allclose(ret, [[2.75, 3.5, 3.0]])


@pytest.mark.parametrize("normalize", [True, False])
def test_advantages_torch_numpy_and_c_agree(episodes, normalize):
    obs, rewards = episodes
    t_ret, t_adv = torch_advantages(torch.as_tensor(obs), torch.as_tensor(rewards), 0.95, normalize)
    for i in range(len(obs)):
        ret, adv = np_advantages(obs[i], rewards[i], 0.95, normalize)
        np.testing.assert_allclose(ret, t_ret[i].numpy(), rtol=1e-6)
        np.testing.assert_allclose(adv, t_adv[i].numpy(), atol=1e-5)
        if native.available():
            c_ret, c_adv = native.advantages(obs[i], rewards[i], 0.95, normalize)
            np.testing.assert_allclose(c_ret, ret, rtol=1e-6)
            np.testing.assert_allclose(c_adv, adv, atol=1e-5)
        # the baseline is a least-squares fit: its residuals are orthogonal to the constant feature
        if not normalize:
            assert abs(adv.mean()) < 1e-3 * np.abs(adv).mean()


def test_advantages_refuse_bad_episodes(episodes):
    obs, rewards = episodes
    with pytest.raises(InputError, match="rewards must have shape"):
        np_advantages(obs[0], rewards[0][:, :-1], 0.9)
    bad = rewards[0].copy()
    bad[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        np_advantages(obs[0], bad, 0.9)
    if native.available():
        with pytest.raises(native.NativeError, match="advantages"):
            native.advantages(obs[0], bad, 0.9)


# --- the meta-gradient -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nav_batch():
    """A real meta-batch of 4 navigation tasks (double precision for the comparisons)."""
    env = PointNavigation()
    policy = GaussianPolicy(2, 2, (16, 16))
    rng = np.random.default_rng(3)
    theta = policy.init(torch.Generator().manual_seed(3))
    tasks = env.sample_tasks(rng, 4)
    sup = rollout(env, policy, theta.expand(4, -1), tasks, 3, rng)
    _, s_adv = torch_advantages(sup.obs, sup.rewards, env.discount)
    s_obs, s_act = sup.flat()
    b = MetaBatch(s_obs, s_act, s_adv.reshape(4, -1), s_obs, s_act, s_adv.reshape(4, -1))
    qry = rollout(env, policy, adapt_all(policy, theta, b, 0.1).detach(), tasks, 3, rng)
    _, q_adv = torch_advantages(qry.obs, qry.rewards, env.discount)
    q_obs, q_act = qry.flat()
    batch = MetaBatch(*(t.double() for t in (s_obs, s_act, s_adv.reshape(4, -1), q_obs, q_act, q_adv.reshape(4, -1))))
    return policy, theta.double(), batch


def test_vmapped_meta_gradient_equals_a_per_task_loop(nav_batch):
    policy, theta, batch = nav_batch
    vm = meta_gradient(policy, theta, batch, 0.1)
    loop = loop_meta_gradient(policy, theta, batch, 0.1)
    assert vm.norm() > 1e-3  # a real gradient, not zeros on both sides
    torch.testing.assert_close(vm, loop, atol=1e-5, rtol=1e-5)
    # and against central finite differences of the surrogate along a random direction (float64)
    from torch.func import vmap

    from metaedge.sdk.rl.maml import surrogate
    with torch.no_grad():
        old = vmap(policy.log_prob)(adapt_all(policy, theta, batch, 0.1), batch.query_obs, batch.query_act)
        v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        eps = 1e-5
        fd = (surrogate(policy, theta + eps * v, batch, 0.1, old) - surrogate(policy, theta - eps * v, batch, 0.1, old))
    assert float(fd / (2 * eps)) == pytest.approx(float(vm @ v), rel=1e-5, abs=1e-9)


def test_vmapped_trpo_step_equals_the_per_task_loop(nav_batch):
    policy, theta, batch = nav_batch
    new, info = trpo_step(policy, theta, batch, 0.1)
    ref, ref_info = loop_trpo_step(policy, theta, batch, 0.1)
    assert info.accepted and ref_info.accepted and info.loss_after < info.loss_before
    assert 0 < info.kl < 0.01
    torch.testing.assert_close(new, ref, atol=1e-5, rtol=1e-5)


# --- export and the device runtime -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy_bundle(tmp_path_factory):
    """A policy bundle exported from an untrained run (export does not depend on training)."""
    from metaedge.export.policy import export_policy

    root = tmp_path_factory.mktemp("policy")
    config = RLConfig(family="nav2d", hidden=(16, 16), iterations=1)
    theta = config.policy().init(torch.Generator().manual_seed(5))
    (root / "run").mkdir()
    save_run(root / "run", RLRun(config, theta, 0))
    return export_policy(root / "run", root / "bundle"), RLRun(config, theta, 0)


def test_exported_step_equals_the_pytorch_inner_step(policy_bundle):
    path, run = policy_bundle
    bundle = PolicyBundle.open(path)
    rt = PolicyRuntime(bundle)
    assert bundle.record.size == run.policy.size and bundle.record.parity.adapt_step <= 1e-5
    env = run.env
    rng = np.random.default_rng(11)
    tasks = env.sample_tasks(rng, 1)
    eps = rollout(env, run.policy, run.theta[None], tasks, 5, rng)
    obs, act, rew = eps.obs[0].numpy(), eps.actions[0].numpy(), eps.rewards[0].numpy()
    # the device's whole adaptation (numpy advantages + ONNX step) against PyTorch's
    _, adv = torch_advantages(eps.obs, eps.rewards, env.discount)
    want = inner_step(run.policy, run.theta, eps.obs[0].reshape(-1, 2), eps.actions[0].reshape(-1, 2),
                      adv.reshape(-1), run.config.inner_lr).detach().numpy()
    got = rt.adapt(None, obs, act, rew)
    assert np.abs(want - run.theta.numpy()).max() > 1e-3  # the step moves the parameters
    np.testing.assert_allclose(got, want, atol=1e-5)
    mean = rt.act(got, obs.reshape(-1, 2))
    np.testing.assert_allclose(mean, run.policy.mean(torch.as_tensor(got), eps.obs[0].reshape(-1, 2)).detach().numpy(),
                               atol=1e-5)
    sampled = rt.act(got, obs[0, :3], np.random.default_rng(0))
    assert sampled.shape == (3, 2) and not np.allclose(sampled, mean[:3])
    with pytest.raises(InputError, match=r"observations must have shape \(n, 2\)"):
        rt.act(None, obs[0, :, :1])
    with pytest.raises(InputError, match="actions must have shape"):
        rt.adapt(None, obs, act[..., :1], rew)


def test_policy_bundle_refuses_tampering_and_bad_records(policy_bundle, tmp_path):
    import shutil

    path, _ = policy_bundle
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    theta0 = np.load(copy / "theta0.npy")
    np.save(copy / "theta0.npy", theta0 + 1)
    with pytest.raises(BundleError, match="does not match its sha256"):
        PolicyBundle.open(copy)
    record = json.loads((path / "policy.json").read_text())
    del record["inner_lr"]
    with pytest.raises(ManifestError, match="inner_lr is missing.*rl-export"):
        PolicyRecord.parse(record)
    assert PolicyRecord.parse(json.loads((path / "policy.json").read_text())) == PolicyBundle.open(path).record


def test_runtime_policy_imports_no_torch(policy_bundle):
    path, _ = policy_bundle
    proc = run_without(f"""
        import numpy as np
        from metaedge.runtime.policy import PolicyBundle, PolicyRuntime
        rt = PolicyRuntime(PolicyBundle.open({str(path)!r}))
        obs = np.zeros((2, 4, 2), np.float32); act = np.ones((2, 4, 2), np.float32)
        rew = np.arange(8, dtype=np.float32).reshape(2, 4)
        print(rt.adapt(None, obs + np.arange(4)[None, :, None] * 0.1, act, rew).shape)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"({PolicyBundle.open(path).record.size},)"


@pytest.mark.parametrize("name", ["nav2d-maml.json", "pendulum-maml.json"])
def test_shipped_configs_parse(name):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / name
    config = RLConfig.from_dict(json.loads(path.read_text()))
    assert config.family == name.split("-")[0] and config.mode == "maml"
    with pytest.raises(InputError, match="unknown rl-train option"):
        RLConfig.from_dict({**json.loads(path.read_text()), "meta_lr": 1.0})
    with pytest.raises(InputError, match="inner_lr must be a positive"):
        RLConfig.from_dict({"inner_lr": -1})

"""The per-task-loop reference of one MAML-TRPO meta-iteration, written the way learn2learn's ``maml_trpo``
example works (plain ``torch.autograd``, one task at a time: roll out, ``autograd.grad(..., create_graph=True)``,
``theta - lr * g``; the surrogate and every Fisher-vector product re-adapt task by task; double backward for the
Hessian-vector product).

It exists to check the vmapped implementation (:mod:`.maml`) against an independent one, and as the comparator
of ``benchmarks/meta_rl.py`` where learn2learn's own example cannot run. It shares only the policy's density and
the advantage definition with :mod:`.maml`.
"""

from __future__ import annotations

import numpy as np
import torch

from .advantages import advantages
from .envs import VecEnv
from .maml import DEFAULT_TRPO, MetaBatch, StepInfo, TRPOSettings, conjugate_gradient, pg_loss
from .policy import GaussianPolicy
from .rollout import Episodes, rollout


def _adapt(policy: GaussianPolicy, theta: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor,
           lr: float, create_graph: bool = True) -> torch.Tensor:
    g = torch.autograd.grad(pg_loss(policy, theta, obs, act, adv), theta, create_graph=create_graph)[0]
    return theta - lr * g


def loop_surrogate(policy: GaussianPolicy, theta: torch.Tensor, batch: MetaBatch, lr: float,
                   old_logp: list[torch.Tensor]) -> torch.Tensor:
    """The meta-surrogate of :func:`.maml.surrogate`, one task at a time."""
    total = 0.0
    n = batch.support_obs.shape[0]
    for i in range(n):
        new = _adapt(policy, theta, batch.support_obs[i], batch.support_act[i], batch.support_adv[i], lr)
        logp = policy.log_prob(new, batch.query_obs[i], batch.query_act[i])
        total = total - (torch.exp(logp - old_logp[i]) * batch.query_adv[i]).mean()
    return total / n


def loop_kl(policy: GaussianPolicy, theta: torch.Tensor, batch: MetaBatch, lr: float,
            old_adapted: list[torch.Tensor]) -> torch.Tensor:
    total = 0.0
    n = batch.support_obs.shape[0]
    for i in range(n):
        new = _adapt(policy, theta, batch.support_obs[i], batch.support_act[i], batch.support_adv[i], lr)
        total = total + policy.kl(old_adapted[i], new, batch.query_obs[i])
    return total / n


def _old(policy: GaussianPolicy, theta: torch.Tensor, batch: MetaBatch, lr: float
         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    theta = theta.detach().requires_grad_(True)
    adapted, logps = [], []
    for i in range(batch.support_obs.shape[0]):
        new = _adapt(policy, theta, batch.support_obs[i], batch.support_act[i], batch.support_adv[i], lr,
                     create_graph=False).detach()
        adapted.append(new)
        logps.append(policy.log_prob(new, batch.query_obs[i], batch.query_act[i]).detach())
    return adapted, logps


def loop_meta_gradient(policy: GaussianPolicy, theta: torch.Tensor, batch: MetaBatch, lr: float) -> torch.Tensor:
    """``(P,)`` the surrogate's gradient at ``theta`` by a per-task loop."""
    _, old_logp = _old(policy, theta, batch, lr)
    theta = theta.detach().requires_grad_(True)
    return torch.autograd.grad(loop_surrogate(policy, theta, batch, lr, old_logp), theta)[0]


def loop_trpo_step(policy: GaussianPolicy, theta: torch.Tensor, batch: MetaBatch, lr: float,
                   settings: TRPOSettings = DEFAULT_TRPO) -> tuple[torch.Tensor, StepInfo]:
    """One MAML-TRPO update as :func:`.maml.trpo_step` computes it, task by task."""
    old_adapted, old_logp = _old(policy, theta, batch, lr)
    theta = theta.detach().requires_grad_(True)
    loss = loop_surrogate(policy, theta, batch, lr, old_logp)
    g = torch.autograd.grad(loss, theta, retain_graph=True)[0]

    # as cherry's hessian_vector_product: the KL gradient's graph once, one double backward per product
    gkl = torch.autograd.grad(loop_kl(policy, theta, batch, lr, old_adapted), theta, create_graph=True)[0]

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(gkl @ v, theta, retain_graph=True)[0] + settings.damping * v

    step = conjugate_gradient(fvp, g, settings.cg_iterations)
    step = (step / torch.sqrt(0.5 * (step @ fvp(step)) / settings.max_kl)).detach()
    before = float(loss.detach())
    base = theta.detach()
    for k in range(settings.line_search_steps):
        candidate = (base - settings.backtrack**k * step).requires_grad_(True)
        after = float(loop_surrogate(policy, candidate, batch, lr, old_logp).detach())
        kl = float(loop_kl(policy, candidate, batch, lr, old_adapted).detach())
        if after < before and kl < settings.max_kl:
            return candidate.detach(), StepInfo(before, after, kl, True)
    return base, StepInfo(before, before, 0.0, False)


def loop_iteration(env: VecEnv, policy: GaussianPolicy, theta: torch.Tensor, tasks: np.ndarray, episodes: int,
                   lr: float, rng: np.random.Generator) -> tuple[torch.Tensor, StepInfo]:
    """A whole meta-iteration the per-task way: for each task, its own support rollout, adaptation and query
    rollout; then :func:`loop_trpo_step`."""
    parts: list[tuple[torch.Tensor, ...]] = []
    for i in range(len(tasks)):
        task = tasks[i:i + 1]
        support = rollout(env, policy, theta[None], task, episodes, rng)
        _, s_adv = advantages(support.obs, support.rewards, env.discount)
        s_obs, s_act = support.flat()
        th = theta.detach().requires_grad_(True)
        adapted = _adapt(policy, th, s_obs[0], s_act[0], s_adv.reshape(1, -1)[0], lr, create_graph=False).detach()
        query: Episodes = rollout(env, policy, adapted[None], task, episodes, rng)
        _, q_adv = advantages(query.obs, query.rewards, env.discount)
        q_obs, q_act = query.flat()
        parts.append((s_obs[0], s_act[0], s_adv.reshape(-1), q_obs[0], q_act[0], q_adv.reshape(-1)))
    batch = MetaBatch(*(torch.stack(x) for x in zip(*parts)))
    return loop_trpo_step(policy, theta, batch, lr)

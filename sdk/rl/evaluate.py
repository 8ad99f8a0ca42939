"""Returns after 0, 1, 2, ... policy-gradient steps on new tasks: what meta-RL is judged by."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import vmap

from .advantages import advantages
from .envs import VecEnv
from .maml import inner_step
from .policy import GaussianPolicy
from .rollout import Episodes, rollout


def adapt_batch(policy: GaussianPolicy, thetas: torch.Tensor, episodes: Episodes, lr: float,
                discount: float) -> torch.Tensor:
    """``(n, P)`` each task's parameters ``thetas`` ``(n, P)`` after one policy-gradient step on its episodes."""
    obs, act = episodes.flat()
    _, adv = advantages(episodes.obs, episodes.rewards, discount)
    step = vmap(lambda th, o, a, ad: inner_step(policy, th, o, a, ad, lr))
    return step(thetas, obs, act, adv.reshape(len(thetas), -1)).detach()


def adaptation_returns(env: VecEnv, policy: GaussianPolicy, theta: torch.Tensor, tasks: np.ndarray, lr: float,
                       steps: int, episodes: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, steps + 1)`` mean undiscounted episode return of each task's policy after ``k = 0 .. steps``
    policy-gradient steps from ``theta`` ``(P,)``, each step on ``episodes`` fresh episodes of the current policy
    (the returns reported are those same episodes' returns)."""
    thetas = theta.detach().expand(len(tasks), -1).clone()
    out = []
    for k in range(steps + 1):
        batch = rollout(env, policy, thetas, tasks, episodes, rng)
        out.append(batch.mean_return.numpy())
        if k < steps:
            thetas = adapt_batch(policy, thetas, batch, lr, env.discount)
    return np.stack(out, axis=1).astype(np.float64)

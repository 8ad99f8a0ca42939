"""Sampling episodes of many tasks at once, each task with its own policy parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .envs import VecEnv
from .policy import GaussianPolicy


@dataclass(frozen=True)
class Episodes:
    """``E`` episodes of ``T`` steps for each of ``n`` tasks."""

    obs: torch.Tensor      # (n, E, T, O) float32: what the policy saw before acting
    actions: torch.Tensor  # (n, E, T, A) float32: the sampled (unclipped) actions
    rewards: torch.Tensor  # (n, E, T) float32

    @property
    def mean_return(self) -> torch.Tensor:
        """``(n,)`` undiscounted return per episode, averaged over each task's episodes."""
        return self.rewards.sum(-1).mean(-1)

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (n, E T, O)``, ``actions (n, E T, A)``."""
        n = self.obs.shape[0]
        return self.obs.reshape(n, -1, self.obs.shape[-1]), self.actions.reshape(n, -1, self.actions.shape[-1])


def rollout(env: VecEnv, policy: GaussianPolicy, thetas: torch.Tensor, tasks: np.ndarray, episodes: int,
            rng: np.random.Generator, deterministic: bool = False) -> Episodes:
    """Run ``episodes`` episodes of ``env.horizon`` steps per task; task ``i`` acts with ``thetas[i]`` ``(n, P)``.

    Noise (policy and process) comes from ``rng``, so a seed fixes the batch.
    """
    n = len(tasks)
    log_std = policy.unflatten(thetas)["log_std"][:, None, :]  # (n, 1, A)
    state = env.reset(tasks, episodes, rng)
    obs_l, act_l, rew_l = [], [], []
    with torch.no_grad():
        for _ in range(env.horizon):
            obs = torch.as_tensor(env.observe(state), dtype=torch.float32)
            act = policy.mean(thetas, obs)
            if not deterministic:
                act = act + torch.exp(log_std) * torch.as_tensor(
                    rng.standard_normal((n, episodes, policy.action_dim)), dtype=torch.float32)
            state, reward = env.step(tasks, state, act.double().numpy(), rng)
            obs_l.append(obs)
            act_l.append(act)
            rew_l.append(torch.as_tensor(reward, dtype=torch.float32))
    return Episodes(torch.stack(obs_l, 2), torch.stack(act_l, 2), torch.stack(rew_l, 2))

"""Discounted returns and advantages with the linear feature baseline of Duan et al. 2016, batched over tasks.

The same definition as the device's (``metaedge.runtime.policy.advantages`` in numpy, ``me_advantages`` in C),
here in torch over a batch of tasks for meta-training. For one task with ``E`` episodes of ``T`` steps:

* returns ``R[e, t] = sum_{k >= t} gamma^(k - t) r[e, k]``;
* features ``phi(o, t) = [c, c^2, t/100, (t/100)^2, (t/100)^3, 1]`` with ``c = clip(o, -10, 10)``
  (``2 O + 4`` of them), as rllab's ``LinearFeatureBaseline``;
* ``w`` solves ``(Phi^T Phi + reg I) w = Phi^T R`` over all ``E T`` steps (Cholesky in float64; ``reg`` starts at
  1e-5 and grows tenfold, at most 5 times, while the matrix is not positive definite);
* advantages ``A = R - Phi w``, then standardised over the task's steps: ``(A - mean) / (std + 1e-8)``.
"""

from __future__ import annotations

import torch

REG = 1e-5
REG_TRIES = 5
EPS = 1e-8


def discounted_returns(rewards: torch.Tensor, discount: float) -> torch.Tensor:
    """``(.., T)`` returns-to-go of ``rewards`` ``(.., T)`` (float64)."""
    r = rewards.double()
    out = torch.empty_like(r)
    acc = torch.zeros_like(r[..., 0])
    for t in range(r.shape[-1] - 1, -1, -1):
        acc = r[..., t] + discount * acc
        out[..., t] = acc
    return out


def features(obs: torch.Tensor) -> torch.Tensor:
    """``(.., E, T, 2 O + 4)`` baseline features of ``obs`` ``(.., E, T, O)`` (float64)."""
    o = obs.double().clamp(-10, 10)
    t = torch.arange(obs.shape[-2], dtype=torch.float64) / 100
    t = t.reshape(t.shape[0], 1).expand(*obs.shape[:-1], 1)
    return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def advantages(obs: torch.Tensor, rewards: torch.Tensor, discount: float,
               normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(returns, advantages)``, each ``(n, E, T)`` float32, for ``obs`` ``(n, E, T, O)`` and ``rewards``
    ``(n, E, T)`` of ``n`` tasks (each task's baseline fitted on its own episodes)."""
    n = obs.shape[0]
    ret = discounted_returns(rewards, discount)
    phi = features(obs).reshape(n, -1, 2 * obs.shape[-1] + 4)
    target = ret.reshape(n, -1, 1)
    gram = phi.transpose(1, 2) @ phi
    rhs = phi.transpose(1, 2) @ target
    eye = torch.eye(gram.shape[-1], dtype=torch.float64)
    reg = torch.full((n,), REG, dtype=torch.float64)
    for _ in range(REG_TRIES):
        chol, info = torch.linalg.cholesky_ex(gram + reg[:, None, None] * eye)
        if not bool((info != 0).any()):
            break
        reg = torch.where(info != 0, reg * 10, reg)
    w = torch.cholesky_solve(rhs, chol)
    adv = (target - phi @ w).reshape(ret.shape)
    if normalize:
        flat = adv.reshape(n, -1)
        mean = flat.mean(1, keepdim=True)
        std = flat.std(1, unbiased=False, keepdim=True)
        adv = ((flat - mean) / (std + EPS)).reshape(ret.shape)
    return ret.float(), adv.float()

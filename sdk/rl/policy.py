"""A Gaussian MLP policy as a pure function of one flat parameter vector.

``theta`` ``(P,)`` holds, in :attr:`GaussianPolicy.shapes` order, the weights and biases of a tanh MLP
``obs (.., O) -> mean (.., A)`` and a state-independent ``log_std`` ``(A,)``. Keeping the parameters one flat
vector is what the device stores, what TRPO's conjugate gradient works on, and what ``torch.func.vmap`` batches
over tasks (``thetas`` ``(n, P)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianPolicy:
    """``pi(a | o) = N(mlp(o), diag(exp(log_std))^2)``."""

    obs_dim: int
    action_dim: int
    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = 0.0

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of every parameter, in their order in ``theta``."""
        widths = (self.obs_dim, *self.hidden, self.action_dim)
        out: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            out[f"layers.{i}.weight"] = (b, a)
            out[f"layers.{i}.bias"] = (b,)
        out["log_std"] = (self.action_dim,)
        return out

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """``(P,)`` initial parameters: torch's default Linear init, a small last layer, ``log_std`` constant."""
        parts = []
        layers = len(self.hidden) + 1
        for name, shape in self.shapes.items():
            if name == "log_std":
                parts.append(torch.full(shape, self.init_log_std))
                continue
            fan_in = self.shapes[name.replace("bias", "weight")][1]
            bound = 1 / math.sqrt(fan_in) * (0.1 if name.startswith(f"layers.{layers - 1}.") else 1.0)
            parts.append((torch.rand(shape, generator=generator) * 2 - 1).mul(bound).flatten())
        return torch.cat([p.flatten() for p in parts])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``theta`` ``(*lead, P)`` as the named parameters ``(*lead, *shape)``."""
        out, offset = {}, 0
        lead = theta.shape[:-1]
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            out[name] = theta[..., offset:offset + size].reshape(*lead, *shape)
            offset += size
        return out

    def mean(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``(.., A)`` action means for ``obs`` ``(.., O)`` and ``theta`` ``(P,)``; or ``(n, N, A)`` for ``n``
        parameter vectors ``theta`` ``(n, P)`` and ``obs`` ``(n, N, O)`` (batched matmuls, no vmap)."""
        p = self.unflatten(theta)
        h = obs
        layers = len(self.hidden) + 1
        batched = theta.dim() > 1
        for i in range(layers):
            bias = p[f"layers.{i}.bias"]
            h = h @ p[f"layers.{i}.weight"].transpose(-1, -2) + (bias.unsqueeze(-2) if batched else bias)
            if i < layers - 1:
                h = torch.tanh(h)
        return h

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(..)`` log-density of ``actions`` ``(.., A)`` at ``obs`` ``(.., O)``."""
        log_std = self.unflatten(theta)["log_std"]
        z = (actions - self.mean(theta, obs)) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, theta_old: torch.Tensor, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``()`` mean over ``obs`` ``(N, O)`` of KL(pi_old(.|o) || pi(.|o))."""
        mu0, mu = self.mean(theta_old, obs), self.mean(theta, obs)
        ls0, ls = self.unflatten(theta_old)["log_std"], self.unflatten(theta)["log_std"]
        var0, var = torch.exp(2 * ls0), torch.exp(2 * ls)
        return (ls - ls0 + (var0 + (mu0 - mu) ** 2) / (2 * var) - 0.5).sum(-1).mean()

    def sample(self, theta: torch.Tensor, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``(.., A)`` actions ``mean + exp(log_std) * noise`` for standard normal ``noise`` ``(.., A)``."""
        return self.mean(theta, obs) + torch.exp(self.unflatten(theta)["log_std"]) * noise

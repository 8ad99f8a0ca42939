"""Neural baselines: training from scratch on the support set, and transfer learning
(pretrain one model on all meta-train tasks pooled, then fine-tune it per task)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch.func import grad, vmap

from ...atomic import atomic_write_bytes
from ..learners.inner import InnerLoop, Params


def adam_finetune(
    inner: InnerLoop, init: Params, xs: torch.Tensor, ys: torch.Tensor, steps: int, lr: float
) -> Params:
    """Per-task Adam on every parameter, batched over tasks.

    Args:
        init: shared starting parameters (no task axis).
        xs, ys: support sets ``(T, k, ...)``.

    Returns:
        Parameters with a leading task axis ``T``.
    """
    b1, b2, eps = 0.9, 0.999, 1e-8

    def one(x: torch.Tensor, y: torch.Tensor) -> Params:
        p = dict(init)
        m = {k: torch.zeros_like(v) for k, v in p.items()}
        v2 = {k: torch.zeros_like(v) for k, v in p.items()}
        for t in range(1, steps + 1):
            g = grad(inner.support_loss)(p, {}, x, y)
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
                p[k] = p[k] - lr * (m[k] / (1 - b1**t)) / ((v2[k] / (1 - b2**t)).sqrt() + eps)
        return p

    with torch.no_grad():
        return vmap(one)(xs, ys)


def pretrain(
    inner: InnerLoop,
    init: Params,
    sample,
    steps: int,
    lr: float = 1e-3,
    cache: Path | None = None,
) -> Params:
    """Joint supervised training on pooled meta-train tasks (the transfer-learning baseline).

    Args:
        inner: loss and forward of the model.
        init: starting parameters.
        sample: ``sample(step) -> (x, y)`` tensors ``(n, ...)`` of pooled meta-train points.
        steps: Adam steps.
        cache: safetensors file reused when it exists with the same ``steps``.
    """
    if cache is not None and cache.is_file():
        cached = load_file(str(cache))
        if int(cached.pop("__steps__").item()) == steps:
            return cached
    params = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    for step in range(steps):
        x, y = sample(step)
        loss = inner.support_loss(params, {}, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {k: v.detach() for k, v in params.items()}
    if cache is not None:
        atomic_write_bytes(cache, save({**out, "__steps__": torch.tensor([steps])}))
    return out


def fresh_init(model: torch.nn.Module, seed: int) -> Params:
    """Randomly re-initialised parameters of ``model``'s architecture (PyTorch default init)."""
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        return {n: p.detach().clone() for n, p in model.named_parameters()}
    finally:
        torch.set_rng_state(gen_state)

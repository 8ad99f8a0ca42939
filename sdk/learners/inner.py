"""The inner loop as pure functions of (adapted parameters, rates, support x, support y).

Everything downstream stands on :meth:`InnerLoop.step`: the trainer differentiates through it
(batched over tasks with ``torch.func.vmap``), the evaluator runs it, and the exporter traces one
call of it into ``adapt_step.onnx``. It must stay free of side effects and Python-level state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from .losses import LossFn

Params = dict[str, torch.Tensor]


class InnerLoop:
    """SGD with per-parameter rates on the adapted parameters of ``model``.

    Args:
        model: an ``nn.Module`` used only as a function: its own parameters are never read here.
        loss: task loss ``loss(pred, target) -> scalar``.
        first_order: drop second-order terms (the inner gradient is treated as a constant).
    """

    def __init__(self, model: nn.Module, loss: LossFn, first_order: bool = False) -> None:
        self.model = model
        self.loss = loss
        self.first_order = first_order

    def forward(self, fast: Params, frozen: Params, x: torch.Tensor) -> torch.Tensor:
        """Model output for ``x`` ``(n, *input_shape)`` with parameters ``fast`` + ``frozen``."""
        return functional_call(self.model, {**frozen, **fast}, (x,))

    def support_loss(self, fast: Params, frozen: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar task loss of the model on ``(x, y)``."""
        return self.loss(self.forward(fast, frozen, x), y)

    def step(
        self, fast: Params, frozen: Params, rates: Params, xs: torch.Tensor, ys: torch.Tensor
    ) -> tuple[Params, torch.Tensor]:
        """One update ``theta' = theta - rate * grad``; returns ``(theta', support loss before the step)``.

        ``rates[name]`` broadcasts against ``fast[name]`` (a scalar for MAML, a same-shape tensor for
        Meta-SGD).
        """
        grads, loss = grad_and_value(self.support_loss)(fast, frozen, xs, ys)
        if self.first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        return {k: fast[k] - rates[k] * grads[k] for k in fast}, loss

    def adapt(
        self, fast: Params, frozen: Params, rates: Params, xs: torch.Tensor, ys: torch.Tensor, steps: int
    ) -> Params:
        """``steps`` inner updates on the support set ``xs`` ``(k, ...)``, ``ys`` ``(k, ...)``."""
        for _ in range(steps):
            fast, _ = self.step(fast, frozen, rates, xs, ys)
        return fast

    def adapt_trajectory(
        self,
        fast: Params,
        frozen: Params,
        rates: Params,
        xs: torch.Tensor,
        ys: torch.Tensor,
        steps: int,
        guard: bool = False,
    ) -> list[Params]:
        """Adapted parameters after 0, 1, ..., ``steps`` updates (``steps + 1`` entries).

        With ``guard``, a step that raises the support loss (or makes it non-finite) is rejected and the
        parameters stay where they were: what the on-device runtime does. Written with ``torch.where`` so
        it batches under ``vmap``.
        """
        out = [fast]
        loss = self.support_loss(fast, frozen, xs, ys) if guard else None
        for _ in range(steps):
            new, _ = self.step(fast, frozen, rates, xs, ys)
            if guard:
                new_loss = self.support_loss(new, frozen, xs, ys)
                keep = torch.isfinite(new_loss) & (new_loss <= loss)
                new = {k: torch.where(keep, new[k], fast[k]) for k in fast}
                loss = torch.where(keep, new_loss, loss)
            fast = new
            out.append(fast)
        return out

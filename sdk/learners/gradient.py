"""Gradient-based meta-learners: MAML, first-order MAML, Meta-SGD, ANIL and Reptile.

Every learner shares one representation, the *meta-state*::

    {"params": {name: tensor}, "rates": {adapted name: tensor of the parameter's shape}}

``rates`` are the inner-loop step sizes, one per adapted parameter entry: constant for MAML / ANIL /
Reptile, meta-learned for Meta-SGD. Shipping them with every bundle keeps the device update the
same for all learners: ``theta' = theta - rates * grad``.

Meta-gradients over a meta-batch are computed with ``torch.func.vmap`` over tasks; the same
per-task objective looped in Python (``batched=False``) is the reference the tests compare against.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from ...errors import InputError
from ..models.conv import has_batch_norm, supports_task_batching, use_batch_statistics
from .base import DeviceSolver, Learner, MetaState
from .inner import InnerLoop, Params
from .losses import get_loss
from .spec import AdaptSpec


class MAML(Learner):
    """MAML (Finn et al. 2017): second-order meta-gradient through ``inner_steps`` SGD steps.

    The base of the gradient-based learners below: each changes one declared knob (first order, learned rates,
    default adaptation spec) or, for Reptile, the meta-gradient.

    Args:
        model: the network, used as a pure function of its parameters.
        loss: ``"mse"`` or ``"cross_entropy"``.
        inner_lr: initial (or fixed) inner-loop step size.
        inner_steps: inner steps during meta-training.
        adapt: adaptation spec (``all``, ``head``, ``biases`` or glob patterns).
    """

    name = "maml"
    has_inner_loop = True
    task_kinds = ("regression", "classification")
    first_order = False
    learn_rates = False
    default_adapt = "all"

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str = "mse",
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        adapt: str | None = None,
    ) -> None:
        if inner_steps < 1:
            raise InputError(f"inner_steps must be at least 1, got {inner_steps}")
        super().__init__(model, loss)
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.adapt_spec = adapt or self.default_adapt
        if has_batch_norm(model):
            use_batch_statistics(model)  # per-task batch statistics, no running buffers (see models.conv)
        # vmap over tasks gives wrong second-order meta-gradients through batch norm (measured, see
        # docs); such learners batch tasks with a Python loop instead.
        self.vmap_tasks = not (has_batch_norm(model) and not self.first_order)
        self.adapted = AdaptSpec(self.adapt_spec).select(self.names)
        self.inner = InnerLoop(model, get_loss(loss), first_order=self.first_order)

    @property
    def device_solver(self) -> DeviceSolver:
        """Rate-weighted SGD steps, ``inner_steps`` of them by default."""
        return DeviceSolver("sgd", steps=self.inner_steps)

    # --- state -------------------------------------------------------------------------------
    def init_state(self) -> MetaState:
        """Meta-state from the model's current (randomly initialised) parameters."""
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        rates = {n: torch.full_like(params[n], self.inner_lr) for n in self.adapted}
        return {"params": params, "rates": rates}

    def canonical(self, state: MetaState) -> MetaState:
        """``state`` with its entries in model order (files store them sorted); checks that none is missing."""
        self._refuse_missing(self._missing(state, "params", self.names) + self._missing(state, "rates", self.adapted))
        return {"params": {n: state["params"][n] for n in self.names},
                "rates": {n: state["rates"][n] for n in self.adapted}}

    def trainable_keys(self) -> tuple[str, ...]:
        """Which parts of the meta-state the outer optimiser updates."""
        return ("params", "rates") if self.learn_rates else ("params",)

    # --- per-task functions (unbatched) --------------------------------------------------------
    def task_objective(
        self, state: MetaState, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
    ) -> torch.Tensor:
        """Query loss after ``inner_steps`` adaptation steps on the support set of one task."""
        fast, frozen = self.split(state["params"])
        fast = self.inner.adapt(fast, frozen, state["rates"], xs, ys, self.inner_steps)
        return self.inner.support_loss(fast, frozen, xq, yq)

    # --- meta-batch ----------------------------------------------------------------------------
    def meta_gradient(
        self,
        state: MetaState,
        xs: torch.Tensor,
        ys: torch.Tensor,
        xq: torch.Tensor,
        yq: torch.Tensor,
        denominator: int | None = None,
        batched: bool = True,
    ) -> tuple[MetaState, torch.Tensor]:
        """See :meth:`Learner.meta_gradient`; ``batched`` vmaps over tasks where that is correct (``vmap_tasks``)."""
        denominator = denominator or xs.shape[0]
        batched = batched and self.vmap_tasks
        trainable = {k: state[k] for k in self.trainable_keys()}
        fixed = {k: v for k, v in state.items() if k not in trainable}

        def objective(tr: MetaState) -> tuple[torch.Tensor, torch.Tensor]:
            full = {**fixed, **tr}
            if batched:
                losses = vmap(self.task_objective, in_dims=(None, 0, 0, 0, 0))(full, xs, ys, xq, yq)
            else:
                losses = torch.stack([self.task_objective(full, *t) for t in zip(xs, ys, xq, yq)])
            return losses.sum() / denominator, losses.detach()

        grads, (_, losses) = grad_and_value(objective, has_aux=True)(trainable)
        return grads, losses

    # --- adaptation for evaluation ---------------------------------------------------------------
    def adapt_batch(
        self,
        state: MetaState,
        xs: torch.Tensor,
        ys: torch.Tensor,
        steps: int,
        rates: Params | None = None,
        guard: bool = False,
    ) -> list[Params]:
        """Adapted fast parameters for each task after 0..``steps`` steps, batched over tasks.

        Returns a list of ``steps + 1`` dicts whose tensors have a leading task axis ``T``. ``guard``
        rejects steps that raise the support loss, as the device runtime does.
        """
        fast, frozen = self.split(state["params"])
        rates = state["rates"] if rates is None else rates

        def one(xs_t: torch.Tensor, ys_t: torch.Tensor) -> list[Params]:
            return self.inner.adapt_trajectory(fast, frozen, rates, xs_t, ys_t, steps, guard=guard)

        with torch.no_grad():
            return vmap(one)(xs, ys)

    def predictions_after_steps(
        self,
        state: MetaState,
        xs: torch.Tensor,
        ys: torch.Tensor,
        xq: torch.Tensor,
        steps: list[int],
        guard: bool = False,
    ) -> dict[int, torch.Tensor]:
        """Query outputs ``(T, q, out)`` after each step count in ``steps``, batched over tasks."""
        traj = self.adapt_batch(state, xs, ys, max(steps), guard=guard)
        return {st: self.predict_batch(state, traj[st], xq) for st in steps}

    def predict_batch(self, state: MetaState, fast: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(T, n, out)`` for inputs ``x`` ``(T, n, ...)`` with per-task ``fast`` params."""
        _, frozen = self.split(state["params"])
        with torch.no_grad():
            return vmap(self.inner.forward, in_dims=(0, None, 0))(fast, frozen, x)


class FirstOrderMAML(MAML):
    """First-order MAML: the inner gradient is a constant for the outer derivative.

    On a conv net (:func:`~metaedge.sdk.models.conv.supports_task_batching`) the meta-batch runs through
    ``model.forward_tasks`` with plain autograd: the tasks side by side along the channels (grouped convolutions)
    instead of ``vmap``, and the inner steps outside the outer derivative, which first order does not need. The
    same meta-gradient (tested against the task loop); about 1.25x faster for Conv4 (docs/results.md).
    """

    name = "fomaml"
    first_order = True

    def __init__(self, model: nn.Module, **kw) -> None:
        super().__init__(model, **kw)
        self.task_batched = supports_task_batching(model)

    def meta_gradient(self, state, xs, ys, xq, yq, denominator=None, batched=True):
        """See :meth:`Learner.meta_gradient`; task-batched through ``forward_tasks`` where the model allows."""
        if not (batched and self.task_batched):
            return super().meta_gradient(state, xs, ys, xq, yq, denominator, batched)
        denominator = denominator or xs.shape[0]
        t = xs.shape[0]
        per_task = {n: p.detach().expand(t, *p.shape) for n, p in state["params"].items()}  # (T, *shape) views
        task_losses = vmap(self.inner.loss)  # (T, n, out), (T, n) -> (T,)
        fast = {n: per_task[n] for n in self.adapted}
        for _ in range(self.inner_steps):
            leaves = {n: v.detach().requires_grad_(True) for n, v in fast.items()}
            loss = task_losses(self.model.forward_tasks({**per_task, **leaves}, xs), ys).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()))
            fast = {n: leaves[n].detach() - state["rates"][n] * g for n, g in zip(leaves, grads)}
        # d(query loss)/d(theta) = d/d(adapted params) for the adapted ones (first order), directly for the others
        leaves = {n: v.detach().requires_grad_(True) for n, v in {**per_task, **fast}.items()}
        losses = task_losses(self.model.forward_tasks(leaves, xq), yq)
        grads = torch.autograd.grad(losses.sum() / denominator, list(leaves.values()))
        by_name = dict(zip(leaves, grads))
        return {"params": {n: by_name[n].sum(0) for n in state["params"]}}, losses.detach()


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): per-parameter inner step sizes are meta-learned with the init."""

    name = "metasgd"
    learn_rates = True


class ANIL(MAML):
    """ANIL (Raghu et al. 2020): MAML whose inner loop adapts the head only."""

    name = "anil"
    default_adapt = "head"


class Reptile(MAML):
    """Reptile (Nichol et al. 2018): move the init toward the task-adapted parameters.

    The "meta-gradient" handed to the outer optimiser is ``theta - mean_i(phi_i)``, where ``phi_i``
    is the result of ``inner_steps`` SGD steps on task ``i``'s support set; no second derivatives.
    """

    name = "reptile"
    first_order = True

    def meta_gradient(
        self,
        state: MetaState,
        xs: torch.Tensor,
        ys: torch.Tensor,
        xq: torch.Tensor,
        yq: torch.Tensor,
        denominator: int | None = None,
        batched: bool = True,
    ) -> tuple[MetaState, torch.Tensor]:
        denominator = denominator or xs.shape[0]
        fast, frozen = self.split(state["params"])
        rates = state["rates"]

        def one(xs_t, ys_t, xq_t, yq_t):
            phi = self.inner.adapt(fast, frozen, rates, xs_t, ys_t, self.inner_steps)
            return phi, self.inner.support_loss(phi, frozen, xq_t, yq_t)

        with torch.no_grad():
            if batched:
                phi, losses = vmap(one)(xs, ys, xq, yq)
            else:
                outs = [one(*t) for t in zip(xs, ys, xq, yq)]
                phi = {k: torch.stack([o[0][k] for o in outs]) for k in fast}
                losses = torch.stack([o[1] for o in outs])
        grads = {n: torch.zeros_like(p) for n, p in state["params"].items()}
        for n in fast:
            grads[n] = (fast[n] - phi[n]).sum(0) / denominator
        return {"params": grads}, losses

"""Hand-derived, task-batched meta-gradients for MAML-family learners over a plain :class:`~metaedge.sdk.models.MLP`.

The eager path (:meth:`MAML.meta_gradient`) asks autograd and ``vmap`` for the meta-gradient; for the small MLPs of
regression meta-learning its cost is per-op overhead (graph recording, vmap batching rules), not arithmetic. Here
the same quantity is written out as batched matmuls over the ``T`` tasks of a meta-batch, without autograd:

* forward and backward of the task loss per task (``torch.matmul`` broadcasts shared weights ``(o, i)`` and
  per-task weights ``(T, o, i)`` alike);
* the inner loop ``f_{j+1} = f_j - r * g(f_j)`` on the adapted parameters ``f`` (frozen ones stay shared);
* the query gradient ``a`` at the adapted parameters, then, backwards through the steps ``j = k-1 .. 0``:
  ``a_r -= g(f_j) * a_f`` (learned rates) and, second order only, ``a -= H(f_j) (r * a_f)``, the Hessian-vector
  product of the support loss by Pearlmutter's R-operator (an R-forward and an R-backward pass through the MLP).

Reptile's "meta-gradient" ``theta - phi`` reuses the same batched inner loop. :func:`fast_meta_gradient` returns
this for the learners and models it serves, else ``None`` (the trainer then keeps the autograd path). Tests compare
it with ``learner.meta_gradient`` to 1e-5 (``tests/test_mlp_fast.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.mlp import MLP
from .base import Learner, MetaState
from .gradient import MAML, FirstOrderMAML, Reptile
from .inner import InnerLoop
from .losses import get_loss

MetaGradient = Callable[..., tuple[MetaState, Tensor]]
Grads = dict[str, Tensor]

#: activations with closed-form first and second derivatives in terms of the activation's output
_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_LOSSES = ("mse", "cross_entropy")


@dataclass(frozen=True)
class MLPPlan:
    """What the fast path needs to know about an MLP learner.

    Attributes:
        hidden: the parameter prefixes of the hidden Linear layers in order, e.g. ``("body.0", "body.2")``.
        skip: whether the model has the linear ``skip`` path from input to output.
        activation: ``relu``, ``tanh`` or ``sigmoid``.
        loss: ``mse`` or ``cross_entropy``.
        adapted: the parameters the inner loop moves.
        first_order: whether the inner gradient is a constant for the outer derivative.
        learn_rates: whether the rates are trained (Meta-SGD).
        steps: inner steps.
        reptile: the meta-gradient is Reptile's ``theta - phi`` (summed over tasks), not a derivative.
    """

    hidden: tuple[str, ...]
    skip: bool
    activation: str
    loss: str
    adapted: frozenset[str]
    first_order: bool
    learn_rates: bool
    steps: int
    reptile: bool = False

    @property
    def layers(self) -> tuple[str, ...]:
        """Every Linear layer from input to output: the hidden ones, then ``head``."""
        return (*self.hidden, "head")


def plan_for(learner: Learner) -> MLPPlan | None:
    """The fast-path plan for ``learner``, or ``None`` where the fast path does not serve it.

    Served: :class:`MAML` and its subclasses that keep its meta-gradient, task objective and plain SGD inner loop
    (first-order MAML, Meta-SGD, ANIL; not the ridge head's Gauss-Newton loop) and :class:`Reptile`, any adaptation
    spec, over an :class:`MLP` with a head, relu/tanh/sigmoid, MSE or cross-entropy.
    """
    if not isinstance(learner, MAML):
        return None
    kind = type(learner)
    reptile = isinstance(learner, Reptile)
    # first-order MAML's own meta_gradient only batches conv nets' tasks; on an MLP it is MAML's
    served = (Reptile.meta_gradient,) if reptile else (MAML.meta_gradient, FirstOrderMAML.meta_gradient)
    objective = kind.task_objective if reptile else MAML.task_objective
    if kind.meta_gradient not in served or kind.task_objective is not objective or kind.split is not Learner.split:
        return None  # a subclass that changed the objective is not what this file derives
    if type(learner.inner) is not InnerLoop or learner.inner.loss is not get_loss(learner.loss_name):
        return None  # another inner loop (the ridge head's Gauss-Newton solves) or loss
    model = learner.model
    if type(model) is not MLP or model.head is None or learner.loss_name not in _LOSSES:
        return None
    mods = list(model.body)
    linears = mods[0::2]
    acts = {type(m) for m in mods[1::2]}
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears) or len(acts) > 1:
        return None
    if acts and next(iter(acts)) not in _ACTIVATIONS:
        return None
    if model.head.bias is None or (model.skip is not None and model.skip.bias is None):
        return None
    activation = _ACTIVATIONS[next(iter(acts))] if acts else "relu"
    return MLPPlan(hidden=tuple(f"body.{i}" for i in range(0, len(mods), 2)), skip=model.skip is not None,
                   activation=activation, loss=learner.loss_name, adapted=frozenset(learner.adapted),
                   first_order=learner.inner.first_order, learn_rates=learner.learn_rates,
                   steps=learner.inner_steps, reptile=reptile)


def fast_meta_gradient(learner: Learner) -> MetaGradient | None:
    """A drop-in for ``learner.meta_gradient`` computed by :class:`FastMLPMetaGradient`, or ``None`` if not served."""
    plan = plan_for(learner)
    return None if plan is None else FastMLPMetaGradient(plan, learner)


# --- one pass through the MLP ------------------------------------------------------------------------------
@dataclass
class _Forward:
    """Activations of one forward pass at one parameter point; ``T`` tasks, ``n`` points each.

    ``inputs[l]``: input of Linear layer ``l`` ``(T, n, i_l)`` (``inputs[0]`` is ``x``); ``slopes[l]``: the
    activation's derivative at hidden layer ``l`` ``(T, n, h_l)`` (None for relu: its output masks instead);
    ``out``: outputs ``(T, n, o)``.
    """

    inputs: list[Tensor]
    slopes: list[Tensor | None]
    out: Tensor


@dataclass
class _Backward:
    """Gradients of one backward pass and what an R-backward pass reuses from it.

    ``grads``: by parameter name, ``(T, *shape)`` or, where reduced, ``shape`` (summed over tasks);
    ``upstream[l]``: dL/d(output of hidden layer l) ``(T, n, h_l)``, for the hidden layers the pass reached;
    ``deltas[l]``: dL/d(pre-activation of hidden layer l); ``dout``: dL/d(outputs) ``(T, n, o)``.
    """

    grads: Grads
    upstream: dict[int, Tensor]
    deltas: dict[int, Tensor]
    dout: Tensor


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``x @ w^T + b`` for ``x`` ``(T, n, i)``; ``w`` ``(o, i)`` shared or ``(T, o, i)`` per task, ``b`` ``(o,)`` or
    ``(T, o)`` (a frozen weight may meet an adapted bias and the other way round)."""
    bias = b if b.dim() == 1 else b.unsqueeze(1)
    if w.dim() == 2:
        if b.dim() == 1:
            return torch.addmm(b, x.reshape(-1, x.shape[-1]), w.t()).reshape(*x.shape[:-1], w.shape[0])
        return _times(x, w.t()) + bias
    return torch.baddbmm(bias, x, w.transpose(1, 2))


def _times(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w`` for ``x`` ``(T, n, o)`` and ``w`` ``(o, i)`` or ``(T, o, i)``: back through a Linear layer."""
    if w.dim() == 2:
        return torch.mm(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[1])
    return torch.bmm(x, w)


def _outer(delta: Tensor, x: Tensor, reduce: bool) -> Tensor:
    """Weight gradient ``delta^T x`` per task ``(T, o, i)``, or summed over tasks ``(o, i)`` with ``reduce``."""
    if reduce:
        return torch.mm(delta.reshape(-1, delta.shape[-1]).t(), x.reshape(-1, x.shape[-1]))
    return torch.bmm(delta.transpose(1, 2), x)


def _bias_grad(delta: Tensor, reduce: bool) -> Tensor:
    return delta.sum((0, 1)) if reduce else delta.sum(1)


class FastMLPMetaGradient:
    """``learner.meta_gradient`` for a learner :func:`plan_for` serves, by hand-derived batched passes.

    Call it like :meth:`Learner.meta_gradient`: ``(state, xs, ys, xq, yq, denominator=None)`` with support sets
    ``(T, k, ...)`` and query sets ``(T, q, ...)``; returns ``(grads, task_losses)``, grads keyed like the
    trainable parts of ``state`` and shaped like them, losses ``(T,)``.
    """

    def __init__(self, plan: MLPPlan, learner: Learner) -> None:
        self.plan = plan
        self.learner = learner
        layers = plan.layers
        adapted_layers = [i for i, name in enumerate(layers) if {f"{name}.weight", f"{name}.bias"} & plan.adapted]
        if plan.skip and {"skip.weight", "skip.bias"} & plan.adapted:
            adapted_layers.append(len(layers) - 1)  # the skip path joins at the output
        #: the lowest layer whose parameters adapt: inner-loop backward passes stop there
        self.lowest = min(adapted_layers)

    def __call__(self, state: MetaState, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                 denominator: int | None = None, batched: bool = True) -> tuple[MetaState, Tensor]:
        plan = self.plan
        if not self._serves(xs, ys, yq):  # targets of another shape broadcast in the eager loss: keep its meaning
            return self.learner.meta_gradient(state, xs, ys, xq, yq, denominator=denominator, batched=batched)
        denominator = denominator or xs.shape[0]
        params, rates = state["params"], state["rates"]
        xs, xq = xs.reshape(*xs.shape[:2], -1), xq.reshape(*xq.shape[:2], -1)
        fast = {n: p for n, p in params.items() if n in plan.adapted}
        frozen = {n: p for n, p in params.items() if n not in plan.adapted}
        # inner loop: keep each step's forward/backward for the reverse sweep
        trail: list[tuple[dict[str, Tensor], _Forward, _Backward]] = []
        for _ in range(plan.steps):
            point = {**frozen, **fast}
            fwd = self._forward(point, xs)
            bwd = self._backward(point, fwd, self._dloss(fwd.out, ys, 1.0), self.lowest, plan.adapted, reduce=False)
            if not plan.reptile:
                trail.append((point, fwd, bwd))
            fast = {n: torch.addcmul(f, rates[n], bwd.grads[n], value=-1) for n, f in fast.items()}
        point = {**frozen, **fast}
        fwd = self._forward(point, xq)
        losses = self._task_losses(fwd.out, yq)
        if plan.reptile:  # init minus the adapted parameters; frozen ones do not move
            moves = {n: (params[n] - f).sum(0) / denominator for n, f in fast.items()}
            return {"params": {n: moves[n] if n in moves else torch.zeros_like(p) for n, p in params.items()}}, losses
        # per-task adjoints are needed only where the reverse sweep reads them
        reduce_all = plan.first_order and not plan.learn_rates
        # the sweep is linear in the query adjoint: scaling it by 1/denominator scales every meta-gradient
        bwd = self._backward(point, fwd, self._dloss(fwd.out, yq, 1.0 / denominator), 0, set(params),
                             reduce=reduce_all)
        adj = bwd.grads
        rate_grads = {n: torch.zeros_like(r) for n, r in rates.items()} if plan.learn_rates else {}
        for point, fwd_j, bwd_j in reversed(trail):
            if plan.learn_rates:
                for n in rate_grads:
                    rate_grads[n] = rate_grads[n] - (bwd_j.grads[n] * adj[n]).sum(0)
            if not plan.first_order:
                v = {n: rates[n] * adj[n] for n in plan.adapted}
                hv = self._hvp(point, fwd_j, bwd_j, v)
                adj = {n: a - hv[n] for n, a in adj.items()}
        out: MetaState = {"params": {n: adj[n] if reduce_all else adj[n].sum(0) for n in params}}
        if plan.learn_rates:
            out["rates"] = rate_grads
        return out, losses

    def _serves(self, xs: Tensor, ys: Tensor, yq: Tensor) -> bool:
        """Whether targets are shaped as this file derives: ``(T, n, o)`` floats for MSE, ``(T, n)`` int64 labels."""
        out_dim = self.learner.output_dim
        if self.plan.loss == "mse":
            return all(y.dim() == 3 and y.shape[-1] == out_dim and y.is_floating_point() for y in (ys, yq))
        return all(y.dim() == 2 and y.dtype == torch.int64 for y in (ys, yq))

    # --- loss --------------------------------------------------------------------------------------------
    def _task_losses(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-task loss ``(T,)`` of outputs ``(T, n, o)``: MSE over ``n * o`` values or mean cross-entropy."""
        if self.plan.loss == "mse":
            return (out - y).square().mean((1, 2))
        logp = out.log_softmax(-1)
        return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)

    def _dloss(self, out: Tensor, y: Tensor, scale: float) -> Tensor:
        """``scale`` * d(task loss)/d(outputs) ``(T, n, o)``."""
        if self.plan.loss == "mse":
            return (out - y) * (2.0 * scale / (out.shape[1] * out.shape[2]))
        p = out.softmax(-1)
        return (p - nn.functional.one_hot(y, out.shape[-1]).to(p.dtype)) * (scale / out.shape[1])

    def _rdloss(self, out: Tensor, r_out: Tensor) -> Tensor:
        """R-operator of :meth:`_dloss`: the loss Hessian wrt the outputs applied to ``r_out`` ``(T, n, o)``."""
        if self.plan.loss == "mse":
            return r_out * (2.0 / (out.shape[1] * out.shape[2]))
        p = out.softmax(-1)
        return p * (r_out - (p * r_out).sum(-1, keepdim=True)) / out.shape[1]

    # --- activation ----------------------------------------------------------------------------------------
    def _activate(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Activation and its derivative at pre-activations ``z`` (None for relu: see :meth:`_through`)."""
        kind = self.plan.activation
        if kind == "relu":
            return z.relu(), None
        h = z.tanh() if kind == "tanh" else z.sigmoid()
        return h, (1 - h * h) if kind == "tanh" else h * (1 - h)

    @staticmethod
    def _through(g: Tensor, fwd: _Forward, layer: int) -> Tensor:
        """``g`` times the activation's derivative at hidden layer ``layer``: back through the activation."""
        slope = fwd.slopes[layer]
        if slope is None:  # relu: pass where the output is positive, in one kernel (what autograd's relu does)
            return torch.ops.aten.threshold_backward(g, fwd.inputs[layer + 1], 0.0)
        return g * slope

    def _curvature(self, h: Tensor, slope: Tensor) -> Tensor:
        """The activation's second derivative from its output ``h`` and first derivative ``slope``."""
        return -2 * h * slope if self.plan.activation == "tanh" else slope * (1 - 2 * h)

    # --- passes ----------------------------------------------------------------------------------------------
    def _forward(self, p: dict[str, Tensor], x: Tensor) -> _Forward:
        inputs, slopes = [x], []
        h = x
        for name in self.plan.hidden:
            h, slope = self._activate(_linear(h, p[f"{name}.weight"], p[f"{name}.bias"]))
            inputs.append(h)
            slopes.append(slope)
        out = _linear(h, p["head.weight"], p["head.bias"])
        if self.plan.skip:
            out = out + _linear(x, p["skip.weight"], p["skip.bias"])
        return _Forward(inputs, slopes, out)

    def _backward(self, p: dict[str, Tensor], fwd: _Forward, dout: Tensor, lowest: int, wanted: set[str] | frozenset,
                  reduce: bool) -> _Backward:
        """Gradients of the loss whose output gradient is ``dout``, for the ``wanted`` parameters, propagated down
        to Linear layer ``lowest``."""
        grads: Grads = {}
        upstream: dict[int, Tensor] = {}
        deltas: dict[int, Tensor] = {}
        top = len(self.plan.hidden)
        self._layer_grads(grads, "head", dout, fwd.inputs[top], wanted, reduce)
        if self.plan.skip:
            self._layer_grads(grads, "skip", dout, fwd.inputs[0], wanted, reduce)
        delta, weight = dout, p["head.weight"]
        for layer in range(top - 1, lowest - 1, -1):
            name = self.plan.hidden[layer]
            upstream[layer] = _times(delta, weight)
            delta = deltas[layer] = self._through(upstream[layer], fwd, layer)
            self._layer_grads(grads, name, delta, fwd.inputs[layer], wanted, reduce)
            weight = p[f"{name}.weight"]
        return _Backward(grads, upstream, deltas, dout)

    @staticmethod
    def _layer_grads(grads: Grads, name: str, delta: Tensor, x: Tensor, wanted: set[str] | frozenset,
                     reduce: bool) -> None:
        if f"{name}.weight" in wanted:
            grads[f"{name}.weight"] = _outer(delta, x, reduce)
        if f"{name}.bias" in wanted:
            grads[f"{name}.bias"] = _bias_grad(delta, reduce)

    def _hvp(self, p: dict[str, Tensor], fwd: _Forward, bwd: _Backward, v: dict[str, Tensor]) -> Grads:
        """Hessian of the support loss at ``p`` times ``v`` (per task, adapted parameters only; zero elsewhere),
        for every parameter: ``(T, *shape)``. R-forward, then R-backward through the cached passes."""
        plan = self.plan

        def direction(name: str) -> tuple[Tensor | None, Tensor | None]:
            return v.get(f"{name}.weight"), v.get(f"{name}.bias")

        def r_linear(x: Tensor, r_x: Tensor | None, w: Tensor, name: str) -> Tensor | None:
            """R of ``x @ w^T + b``: ``r_x @ w^T + x @ Vw^T + Vb`` (terms with a zero factor skipped)."""
            vw, vb = direction(name)
            terms = [t for t in (None if r_x is None else _times(r_x, w.transpose(-1, -2)),
                                 None if vw is None else torch.bmm(x, vw.transpose(1, 2)),
                                 None if vb is None else vb.unsqueeze(1).expand(x.shape[0], x.shape[1], -1))
                     if t is not None]
            if not terms:
                return None
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            return total

        # R-forward
        r_inputs: list[Tensor | None] = [None]
        r_pre: list[Tensor | None] = []
        r_h: Tensor | None = None
        for layer, name in enumerate(plan.hidden):
            r_z = r_linear(fwd.inputs[layer], r_h, p[f"{name}.weight"], name)
            r_pre.append(r_z)
            r_h = None if r_z is None else self._through(r_z, fwd, layer)
            r_inputs.append(r_h)
        top = len(plan.hidden)
        r_out = r_linear(fwd.inputs[top], r_h, p["head.weight"], "head")
        if plan.skip:
            r_skip = r_linear(fwd.inputs[0], None, p["skip.weight"], "skip")
            r_out = r_skip if r_out is None else (r_out if r_skip is None else r_out + r_skip)
        assert r_out is not None  # v is non-zero on at least one adapted parameter, all of which reach the output
        # R-backward
        hv: Grads = {}
        r_dout = self._rdloss(fwd.out, r_out)

        def layer_hv(name: str, r_delta: Tensor, delta: Tensor | None, x: Tensor, r_x: Tensor | None) -> None:
            """R of ``delta^T x`` and ``sum(delta)``: ``r_delta^T x + delta^T r_x``."""
            gw = torch.bmm(r_delta.transpose(1, 2), x)
            if r_x is not None:
                gw = gw + torch.bmm(delta.transpose(1, 2), r_x)
            hv[f"{name}.weight"], hv[f"{name}.bias"] = gw, r_delta.sum(1)

        layer_hv("head", r_dout, bwd.dout, fwd.inputs[top], r_inputs[top])
        if plan.skip:
            layer_hv("skip", r_dout, None, fwd.inputs[0], None)
        r_delta, delta, name = r_dout, bwd.dout, "head"
        for layer in range(top - 1, -1, -1):
            weight = p[f"{name}.weight"]
            vw, _ = direction(name)
            r_up = _times(r_delta, weight)
            if vw is not None:
                r_up = r_up + torch.bmm(delta, vw)
            r_delta = self._through(r_up, fwd, layer)
            if r_pre[layer] is not None and plan.activation != "relu":  # relu'' = 0
                r_delta = r_delta + bwd.upstream[layer] * self._curvature(fwd.inputs[layer + 1], fwd.slopes[layer]) \
                    * r_pre[layer]
            name = plan.hidden[layer]
            delta = bwd.deltas.get(layer)  # reached by the backward pass wherever r_inputs[layer] is non-zero
            layer_hv(name, r_delta, delta, fwd.inputs[layer], r_inputs[layer])
        return hv

"""Prototypical Networks (Snell et al. 2017): classify by distance to class-mean embeddings.

There is no inner loop: "adaptation" on a device is computing one prototype per class from the
support embeddings, which is why ProtoNets export only the embedding network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..models.conv import inference_input, inference_model
from .base import DeviceSolver, Learner, MetaState

#: embeddings per forward pass when a split is embedded at once (bounds the activations: ~40 MB for Conv4 at 28x28)
EMBED_BATCH = 1024
#: (episode x query x class x dim) elements per slice of :func:`prototype_logits` over many episodes
LOGITS_ELEMENTS = 1 << 24


def prototypes(z: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means of embeddings ``z`` ``(..., n, d)`` with ``labels`` ``(..., n)`` in ``0..ways-1`` ->
    ``(..., ways, d)`` (leading dims: episodes)."""
    onehot = F.one_hot(labels, ways).to(z.dtype)
    return onehot.mT @ z / onehot.sum(-2).clamp_min(1)[..., :, None]


def prototype_logits(zq: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances ``(..., q, ways)`` of ``zq`` ``(..., q, d)`` to ``protos``
    ``(..., ways, d)`` (the paper's choice of distance)."""
    return -((zq[..., :, None, :] - protos[..., None, :, :]) ** 2).sum(-1)


class ProtoNet(Learner):
    """Prototypical Networks over an embedding model (a network without head, e.g. Conv4 with ``out_dim=0``).

    Batch norm keeps running statistics: support and query of an episode are embedded together in
    training mode (as in the reference code), evaluation uses the running statistics, so a device
    can embed one sample at a time.
    """

    name = "protonet"
    has_inner_loop = False
    task_kinds = ("classification",)
    has_head = False
    embeds_samples = True

    def __init__(self, model: nn.Module, *, loss: str = "cross_entropy", inner_lr: float = 0.0,
                 inner_steps: int = 1, adapt: str | None = None) -> None:
        """``inner_lr``, ``inner_steps`` and ``adapt`` are accepted for a uniform constructor and ignored: the
        device computes prototypes, it moves no parameter."""
        super().__init__(model, loss)
        self.inner_lr = float(inner_lr)
        self.inner_steps = 0
        self.adapt_spec = "none"
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.adapted: list[str] = []

    @property
    def device_solver(self) -> DeviceSolver:
        """Class prototypes from the support embeddings; no steps."""
        return DeviceSolver("prototypes", steps=0)

    def init_state(self) -> MetaState:
        return {
            "params": {n: p.detach().clone() for n, p in self.model.named_parameters()},
            "rates": {},
            "buffers": {n: b.detach().clone() for n, b in self.model.named_buffers()},
        }

    def canonical(self, state: MetaState) -> MetaState:
        self._refuse_missing(self._missing(state, "params", self.names)
                             + self._missing(state, "buffers", self.buffer_names))
        return {"params": {n: state["params"][n] for n in self.names}, "rates": {},
                "buffers": {n: state["buffers"][n] for n in self.buffer_names}}

    def embed(self, state: MetaState, x: torch.Tensor, params=None, train: bool = False) -> torch.Tensor:
        """Embeddings ``(n, d)``; in training mode batch norm also updates the running buffers in place."""
        self.model.train(train)
        return functional_call(self.model, {**(params or state["params"]), **state.get("buffers", {})}, (x,))

    def episode_logits(self, state: MetaState, xs, ys, xq, params=None, train: bool = False) -> torch.Tensor:
        """Logits ``(q, ways)`` of one episode: support ``(k*ways, ...)`` and query embedded in one batch."""
        ways = int(ys.max().item()) + 1
        z = self.embed(state, torch.cat([xs, xq]), params, train)
        return prototype_logits(z[len(xs):], prototypes(z[: len(xs)], ys, ways))

    def embed_inputs(self, state: MetaState, x: torch.Tensor, batch_size: int = EMBED_BATCH) -> torch.Tensor:
        """Evaluation-mode embeddings ``(N, d)`` of samples ``x`` ``(N, ...)``, ``batch_size`` at a time.

        Batch norm uses the running statistics here, so each sample's embedding is independent of the others
        it is embedded with: embedding a split once gives the embeddings every episode would compute. The
        forward pass is :func:`~metaedge.sdk.models.conv.inference_model`'s (batch norm folded into the
        convolutions, ``channels_last``): the same embeddings up to float32 rounding, about 2x faster.
        """
        model = inference_model(self.model, {**state["params"], **state.get("buffers", {})})
        with torch.no_grad():
            return torch.cat([model(inference_input(part)) for part in x.split(batch_size)])

    def logits_from_embeddings(self, zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """Prototype logits ``(T, q, ways)`` from support ``zs`` ``(T, k, d)``, labels ``ys`` ``(T, k)`` and
        queries ``zq`` ``(T, q, d)``, in slices of episodes that bound the distance tensor."""
        ways = int(ys.max().item()) + 1
        protos = prototypes(zs, ys, ways)  # (T, ways, d)
        per_task = zq.shape[1] * ways * zq.shape[2]
        step = max(1, LOGITS_ELEMENTS // max(per_task, 1))
        with torch.no_grad():
            return torch.cat([prototype_logits(zq[i:i + step], protos[i:i + step]) for i in range(0, len(zq), step)])

    def meta_gradient(self, state, xs, ys, xq, yq, denominator=None, batched=True):
        """Gradient of the mean query cross-entropy over the episodes ``(T, ...)`` (looped: T is usually 1)."""
        denominator = denominator or xs.shape[0]
        params = {k: v.detach().requires_grad_(True) for k, v in state["params"].items()}
        losses = torch.stack([F.cross_entropy(self.episode_logits(state, *e[:3], params=params, train=True), e[3])
                              for e in zip(xs, ys, xq, yq)])
        grads = torch.autograd.grad(losses.sum() / denominator, list(params.values()))
        return {"params": dict(zip(params, grads))}, losses.detach()

    def predictions_after_steps(self, state, xs, ys, xq, steps, guard: bool = False):
        """Prototype logits ``(T, q, ways)``; identical for every step count (there is no inner loop).

        Every episode's support and query samples are embedded together in evaluation mode (per-sample, see
        :meth:`embed_inputs`), then prototypes and distances are taken per episode."""
        t, k = xs.shape[:2]
        z = self.embed_inputs(state, torch.cat([xs.flatten(0, 1), xq.flatten(0, 1)]))
        logits = self.logits_from_embeddings(z[: t * k].view(t, k, -1), ys, z[t * k:].view(t, xq.shape[1], -1))
        return {st: logits for st in steps}

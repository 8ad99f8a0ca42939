"""What every meta-learner is: the abstract :class:`Learner` and the :class:`DeviceSolver` it declares.

The trainer, the evaluator and the exporter never ask *which* learner they hold; they read what the learner
declares about itself: whether it has an inner loop, which task kinds it serves, whether its model ends in an
output head, and how a device adapts for it (:attr:`Learner.device_solver`). A new learner is a subclass that
fills these in and is registered by name (:func:`metaedge.sdk.learners.registry.register_learner`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ...errors import InputError
from .inner import Params
from .losses import TASK_KINDS, get_loss

MetaState = dict[str, Params]
SolverKind = Literal["sgd", "gauss-newton", "prototypes"]
TaskKind = Literal["regression", "classification"]

#: the device solvers the runtimes implement (ONNX graphs, the C library)
SOLVER_KINDS: tuple[str, ...] = ("sgd", "gauss-newton", "prototypes")


@dataclass(frozen=True)
class DeviceSolver:
    """How a device adapts for a learner.

    Attributes:
        kind: ``sgd`` (rate-weighted gradient steps, ``adapt_step.onnx``), ``gauss-newton`` (damped least-squares
            solves on ``gauss_newton.onnx``'s Jacobian) or ``prototypes`` (class means of embeddings; no steps).
        steps: the device's default number of steps (0 for ``prototypes``).
        min_damping: ``gauss-newton`` only: added to ``exp(rates)`` on the diagonal so every solve is well posed.
    """

    kind: SolverKind
    steps: int
    min_damping: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOLVER_KINDS:
            raise InputError(f"unknown device solver {self.kind!r}; choose one of {', '.join(SOLVER_KINDS)}")
        if self.kind == "prototypes" and self.steps != 0:
            raise InputError(f"a prototype solver takes no steps, got {self.steps}")
        if self.kind != "prototypes" and self.steps < 1:
            raise InputError(f"--inner-steps must be at least 1, got {self.steps}")
        if (self.min_damping is not None) != (self.kind == "gauss-newton"):
            raise InputError(f"min_damping belongs to the gauss-newton solver only, not to {self.kind!r}")

    @property
    def unrolls(self) -> bool:
        """Whether export also writes the default steps unrolled into one graph (plain SGD steps only)."""
        return self.kind == "sgd"


class Learner(ABC):
    """A meta-learner over a model used as a pure function of its parameters.

    Subclasses declare the class attributes below and implement the abstract methods. Instances hold ``model``,
    ``loss_name``, ``inner_lr``, ``inner_steps`` (0 without an inner loop), ``adapt_spec``, ``names`` (every
    parameter, in model order) and ``adapted`` (the parameters the inner loop and the device move). A learner
    whose device solver is ``sgd`` or ``gauss-newton`` also holds ``inner``, the
    :class:`~metaedge.sdk.learners.inner.InnerLoop` (``GaussNewtonLoop``) whose ``step`` export traces.
    """

    #: registry key: ``--algo`` on the command line, ``algo`` in run configs and manifests
    name: ClassVar[str]
    #: whether adaptation runs gradient or solver steps on parameters (False: prototypes computed from embeddings)
    has_inner_loop: ClassVar[bool]
    #: the task kinds (``regression``, ``classification``) the learner serves
    task_kinds: ClassVar[tuple[TaskKind, ...]]
    #: whether the model ends in an output head (False: an embedding network whose outputs are compared)
    has_head: ClassVar[bool] = True
    #: whether predictions come from per-sample embeddings (evaluation mode: no batch statistics), so an
    #: evaluator may embed every sample of a split once and draw its episodes from the embeddings
    #: (:meth:`embed_inputs`, :meth:`logits_from_embeddings`)
    embeds_samples: ClassVar[bool] = False

    model: nn.Module
    loss_name: str
    inner_lr: float
    inner_steps: int
    adapt_spec: str
    names: list[str]
    adapted: list[str]

    def __init__(self, model: nn.Module, loss: str) -> None:
        """Keep ``model`` and the loss called ``loss``, refusing a loss of a task kind the learner does not serve."""
        get_loss(loss)  # an unknown name is refused with the known ones
        if TASK_KINDS[loss] not in self.task_kinds:
            raise InputError(f"the {self.name} learner serves {' and '.join(self.task_kinds)} families, not "
                             f"{TASK_KINDS[loss]} ({loss} loss); choose another --algo or family")
        self.model = model
        self.loss_name = loss
        self.names = [n for n, _ in model.named_parameters()]

    @property
    @abstractmethod
    def device_solver(self) -> DeviceSolver:
        """How a device adapts for this learner, with its default steps."""

    @abstractmethod
    def init_state(self) -> MetaState:
        """Meta-state from the model's current (randomly initialised) parameters."""

    @abstractmethod
    def canonical(self, state: MetaState) -> MetaState:
        """``state`` in model order (files store it sorted); raises :class:`InputError` if an entry is missing."""

    @abstractmethod
    def meta_gradient(self, state: MetaState, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor,
                      yq: torch.Tensor, denominator: int | None = None, batched: bool = True
                      ) -> tuple[MetaState, torch.Tensor]:
        """Gradient of ``sum(task losses) / denominator`` w.r.t. the trainable meta-state.

        Args:
            xs, ys: support sets ``(T, k, ...)``; xq, yq: query sets ``(T, q, ...)``.
            denominator: global meta-batch size (differs from ``T`` when ranks share a meta-batch).
            batched: batch over tasks where the learner can (``vmap``) or loop (the reference).

        Returns:
            ``(grads, task_losses)``: grads keyed like the trainable parts of ``state``; losses ``(T,)`` detached.
        """

    @abstractmethod
    def predictions_after_steps(self, state: MetaState, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor,
                                steps: list[int], guard: bool = False) -> dict[int, torch.Tensor]:
        """Query outputs ``(T, q, out)`` after each step count in ``steps`` (one entry per count)."""

    def trainable_keys(self) -> tuple[str, ...]:
        """Which parts of the meta-state the outer optimiser updates."""
        return ("params",)

    def split(self, params: Params) -> tuple[Params, Params]:
        """``(fast, frozen)``: adapted and frozen parameters."""
        fast = {n: params[n] for n in self.adapted}
        frozen = {n: p for n, p in params.items() if n not in fast}
        return fast, frozen

    @property
    def output_dim(self) -> int | None:
        """Outputs of the model's head (classes for classification), or None for an embedding network."""
        head = getattr(self.model, "head", None)
        return head.out_features if isinstance(head, nn.Linear) else None

    def can_predict(self, ways: int | None) -> bool:
        """Whether episodes with ``ways`` classes fit the model's head (embedding learners fit any)."""
        return ways is None or self.output_dim is None or self.output_dim == ways

    @staticmethod
    def _missing(state: MetaState, group: str, names: list[str]) -> list[str]:
        return [f"{group}/{n}" for n in names if n not in state.get(group, {})]

    @staticmethod
    def _refuse_missing(missing: list[str]) -> None:
        if missing:
            raise InputError(f"meta-state lacks {', '.join(missing[:5])}; it was saved for a different model")

"""The task protocol shared by every family.

A *task family* is a distribution over few-shot tasks. A *task* is a support set (the few samples
a device sees) and a query set (what the adapted model is scored on). Families draw tasks from a
seeded ``numpy.random.Generator`` so that a seed fixes every task; batches of tasks are stacked into
arrays with a leading task axis, ready for ``torch.func.vmap``.

Regression tasks carry float targets of shape ``(n, output_dim)``; classification tasks (n-way
k-shot) carry integer labels of shape ``(n,)`` remapped to ``0..ways-1`` per episode, so the same
protocol serves both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ...errors import InputError

TaskKind = Literal["regression", "classification"]
Split = Literal["train", "val", "test"]


@dataclass
class Task:
    """One few-shot task.

    Attributes:
        x_support: ``(k, *input_shape)`` float32 support inputs.
        y_support: ``(k, output_dim)`` float32 targets, or ``(k,)`` int64 labels.
        x_query: ``(q, *input_shape)`` float32 query inputs.
        y_query: ``(q, output_dim)`` float32 targets, or ``(q,)`` int64 labels.
        info: what generated the task (unit id, physical parameters...), for reports and plots.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskBatch:
    """A stack of tasks with equal support and query sizes.

    Attributes:
        x_support: ``(T, k, *input_shape)``.
        y_support: ``(T, k, output_dim)`` or ``(T, k)`` labels.
        x_query: ``(T, q, *input_shape)``.
        y_query: ``(T, q, output_dim)`` or ``(T, q)`` labels.
        info: one ``info`` dict per task.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    info: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def stack(cls, tasks: list[Task]) -> TaskBatch:
        """Stack tasks of equal shapes along a new leading task axis."""
        if not tasks:
            raise InputError("cannot stack an empty list of tasks; ask for at least one task")
        return cls(
            x_support=np.stack([t.x_support for t in tasks]),
            y_support=np.stack([t.y_support for t in tasks]),
            x_query=np.stack([t.x_query for t in tasks]),
            y_query=np.stack([t.y_query for t in tasks]),
            info=[t.info for t in tasks],
        )

    def __len__(self) -> int:
        return int(self.x_support.shape[0])

    def task(self, i: int) -> Task:
        """The ``i``-th task of the batch."""
        return Task(self.x_support[i], self.y_support[i], self.x_query[i], self.y_query[i], self.info[i])


class TaskFamily(ABC):
    """A distribution over tasks.

    Subclasses set the class attributes and implement :meth:`sample_task`. Families with a finite
    set of units (tables, labelled data) draw from disjoint units per ``split``; generative
    families (sinusoid, sensor physics) ignore the split, since every draw is a new task.
    """

    #: registry name
    name: str = "family"
    task_kind: TaskKind = "regression"
    #: shape of one input sample, e.g. ``(1,)`` or ``(1, 28, 28)``
    input_shape: tuple[int, ...] = (1,)
    #: regression: number of targets; classification: number of ways
    output_dim: int = 1
    input_names: tuple[str, ...] = ("x",)
    output_names: tuple[str, ...] = ("y",)
    input_units: tuple[str, ...] = ("",)
    output_units: tuple[str, ...] = ("",)
    #: index of the input that classic calibration fits against (the raw sensor reading)
    primary_input: int = 0
    #: whether the trainer should standardise inputs/targets (sensor units span decades)
    normalize: bool = True
    #: whether classic calibration (2-point linear, least-squares polynomial) is a meaningful baseline
    calibration: bool = False
    #: split the evaluator draws held-out tasks from
    eval_split: str = "test"
    #: headline error metric of reports: "rmse" (physical units) or "mse" (the sinusoid literature)
    metric: str = "rmse"
    #: dynamics families: the controller a bundle states unless the run's ``control`` overrides it (keys of the
    #: manifest's ``control`` part; see docs/control.md), else None
    control_defaults: dict[str, Any] | None = None

    @abstractmethod
    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        """Draw one task with ``shots`` support and ``queries`` query samples."""

    def sample_batch(
        self, rng: np.random.Generator, n_tasks: int, shots: int, queries: int, split: Split = "train"
    ) -> TaskBatch:
        """Draw ``n_tasks`` tasks; the default stacks :meth:`sample_task` draws in order."""
        return TaskBatch.stack([self.sample_task(rng, shots, queries, split) for _ in range(n_tasks)])

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the family's interface (stored in run configs and bundles)."""
        return {
            "name": self.name,
            "task_kind": self.task_kind,
            "input_shape": list(self.input_shape),
            "output_dim": self.output_dim,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "input_units": list(self.input_units),
            "output_units": list(self.output_units),
            "primary_input": self.primary_input,
            "normalize": self.normalize,
            "calibration": self.calibration,
            "metric": self.metric,
        }

    @property
    def input_dim(self) -> int:
        """Number of input features once flattened."""
        return int(np.prod(self.input_shape))


FamilyFactory = Callable[..., TaskFamily]
_REGISTRY: dict[str, FamilyFactory] = {}


def register_family(name: str, factory: FamilyFactory | None = None):
    """Register a family factory under ``name``; usable as a decorator.

    Example::

        @register_family("my-sensor")
        class MySensor(TaskFamily): ...
    """

    def _register(f: FamilyFactory) -> FamilyFactory:
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise InputError(f"a task family named {name!r} is already registered; pick another name")
        _REGISTRY[name] = f
        return f

    return _register(factory) if factory is not None else _register


def make_family(name: str, /, **kwargs: Any) -> TaskFamily:
    """Build the registered family ``name`` with keyword options (e.g. ``path=`` for tables)."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InputError(f"unknown task family {name!r}; known families: {known}")
    return _REGISTRY[name](**kwargs)


def family_names() -> list[str]:
    """Names of all registered families."""
    return sorted(_REGISTRY)


def uniform_points(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """``(n, 1)`` float points drawn uniformly in ``[low, high]``."""
    return rng.uniform(low, high, size=(n, 1))

"""Task losses by name; stored in run configs and bundle manifests."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; ``pred`` and ``target`` ``(n, d)``."""
    return ((pred - target) ** 2).mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy; ``logits`` ``(n, ways)``, ``labels`` ``(n,)`` int64."""
    return F.cross_entropy(logits, labels)


LOSSES: dict[str, LossFn] = {"mse": mse, "cross_entropy": cross_entropy}
#: the task kind each loss serves (and the loss the trainer picks for a family of that kind)
TASK_KINDS: dict[str, str] = {"mse": "regression", "cross_entropy": "classification"}


def loss_for(task_kind: str) -> str:
    """The loss name for a family's ``task_kind``."""
    for name, kind in TASK_KINDS.items():
        if kind == task_kind:
            return name
    raise InputError(f"unknown task kind {task_kind!r}; choose one of {', '.join(TASK_KINDS.values())}")


def get_loss(name: str) -> LossFn:
    """The loss function called ``name``."""
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]

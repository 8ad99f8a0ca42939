"""Task losses by name; stored in run configs and bundle manifests."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; ``pred`` and ``target`` ``(n, d)``."""
    return ((pred - target) ** 2).mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy; ``logits`` ``(n, ways)``, ``labels`` ``(n,)`` int64."""
    return F.cross_entropy(logits, labels)


LOSSES: dict[str, LossFn] = {"mse": mse, "cross_entropy": cross_entropy}


def get_loss(name: str) -> LossFn:
    """The loss function called ``name``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
